"""Transport of job messages: the broker picked by JOBRUNNER_BROKER_URL's scheme, and dead letters.

`broker` has the `Broker` protocol and its two implementations' publish/dead-letter side (RabbitMQ over
AMQP; embedded, the job store's outbox table); `relay` moves committed outbox rows to RabbitMQ.
Stands above `store` (the outbox is a table), below the job API (`jobrunner.jobs`) and the worker.
"""
