"""Transport of job messages: the broker picked by JOBRUNNER_BROKER_URL's scheme, and dead letters.

`base` has the `Broker` protocol (a worker's message source, the outbox relay, dead letters and their
requeue) and `DeadLetter`/`RequeueReport`; `amqp` is RabbitMQ (AmqpBroker, and AmqpSource the worker
consumes from); `embedded` is the job store's outbox table as the queue (EmbeddedBroker, EmbeddedSource);
`broker.broker_for(settings)` picks one by the URL's scheme; `relay` moves committed outbox rows to the
broker. Stands above `store` (the outbox is a table), below the job API (`jobrunner.jobs`) and the worker,
which it knows only as the `base.ConsumingWorker` protocol.
"""
