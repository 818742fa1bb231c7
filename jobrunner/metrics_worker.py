"""Prometheus metrics of a worker, served on JOBRUNNER_WORKER_METRICS_PORT (0 = off)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from jobrunner.states import JobState

DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.finished = Counter("jobrunner_worker_jobs_finished_total",
                                "Jobs this worker brought to a terminal state", ["state"], registry=r)
        self.jobs = Gauge("jobrunner_jobs", "Jobs in the store by state", ["state"], registry=r)
        self.duration = Histogram("jobrunner_job_duration_seconds", "Wall time of job executions",
                                  ["state"], buckets=DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram("jobrunner_job_queue_wait_seconds", "Time from queued to started",
                                    buckets=DURATION_BUCKETS, registry=r)
        self.retries = Counter("jobrunner_job_retries_total", "Jobs requeued for another attempt",
                               ["reason"], registry=r)
        self.kernel_failures = Counter("jobrunner_kernel_failures_total",
                                       "Kernels that failed to start or died", registry=r)
        self.dead_letters = Counter("jobrunner_dead_letters_total", "Messages sent to the dead-letter queue",
                                    registry=r)
        self.busy = Gauge("jobrunner_worker_busy", "1 while this worker runs a job", registry=r)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)

    def set_counts(self, counts: dict[str, int]) -> None:
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state.value, 0))
