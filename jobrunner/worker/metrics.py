"""Prometheus metrics of a worker, served on JOBRUNNER_WORKER_METRICS_PORT (0 = off)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from jobrunner.store.states import JobState

if TYPE_CHECKING:
    from jobrunner.config import Settings
    from jobrunner.execution.pool import KernelPool

DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
TAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _PoolCollector:
    """Reads the kernel pool's counters at scrape time (no bookkeeping on the job path)."""

    def __init__(self, pool: KernelPool):
        self.pool = pool

    def collect(self) -> Iterator[Any]:
        s = self.pool.stats()
        labels = ["kernel"]
        for name, doc, value in (
            ("jobrunner_kernel_pool_size", "Warm kernels the pool keeps ready (configured)", s.size),
            ("jobrunner_kernel_pool_idle", "Warm kernels ready to take now", s.idle),
            ("jobrunner_kernel_pool_starting", "Kernels the pool is starting", s.starting),
        ):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([s.kernel_name], value)
            yield g
        for name, doc, value in (
            ("jobrunner_kernel_pool_taken", "Jobs that got a warm kernel", s.taken),
            ("jobrunner_kernel_pool_missed", "Jobs that found no idle kernel and started one", s.missed),
            ("jobrunner_kernel_pool_replaced", "Idle kernels found dead or hung and replaced", s.replaced),
            (
                "jobrunner_kernel_pool_start_failures",
                "Kernel starts that failed (each is retried)",
                s.start_failures,
            ),
            (
                "jobrunner_kernel_pool_forked",
                "Kernels forked from the pool's pre-imported template process",
                s.forked,
            ),
            (
                "jobrunner_kernel_pool_template_starts",
                "Kernel template processes started (more than one: one died)",
                s.template_starts,
            ),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric([s.kernel_name], value)
            yield c


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.finished = Counter(
            "jobrunner_worker_jobs_finished_total",
            "Jobs this worker brought to a terminal state",
            ["state"],
            registry=r,
        )
        self.jobs = Gauge("jobrunner_jobs", "Jobs in the store by state", ["state"], registry=r)
        self.duration = Histogram(
            "jobrunner_job_duration_seconds",
            "Wall time of job executions",
            ["state"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "jobrunner_job_queue_wait_seconds",
            "Time from queued to started",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "jobrunner_job_retries_total", "Jobs requeued for another attempt", ["reason"], registry=r
        )
        self.kernel_failures = Counter(
            "jobrunner_kernel_failures_total", "Kernels that failed to start or died", registry=r
        )
        self.dead_letters = Counter(
            "jobrunner_dead_letters_total", "Messages sent to the dead-letter queue", registry=r
        )
        self.busy = Gauge("jobrunner_worker_busy", "1 while this worker runs a job", registry=r)
        self.pool_take = Histogram(
            "jobrunner_kernel_pool_take_seconds",
            "Time for a job to get its kernel (warm: ready with its env applied)",
            buckets=TAKE_BUCKETS,
            registry=r,
        )

    def start_pool(self, settings: Settings) -> KernelPool:
        """The worker's warm kernel pool (JOBRUNNER_KERNEL_POOL_SIZE), with its metrics on /metrics."""
        from jobrunner.execution.pool import KernelPool

        pool = KernelPool.start(settings, on_take=self.pool_take.observe)
        self.registry.register(_PoolCollector(pool))
        return pool

    def serve(self, port: int) -> None:
        if port:
            # all interfaces: Prometheus scrapes the worker from another container or host
            start_http_server(port, addr="0.0.0.0", registry=self.registry)  # noqa: S104

    def set_counts(self, counts: dict[str, int]) -> None:
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state.value, 0))
