"""The worker process: takes job messages, runs each attempt, reaps lost workers, exports metrics.

`loop` is `jobrunner worker` (deliveries from the broker, the kernel pools, shutdown); `attempt` handles
one delivery (claim, execute, record, finish); `verify` runs a verification job; `reaper` requeues jobs of
workers that stopped; `metrics` is the worker's Prometheus exporter.
"""
