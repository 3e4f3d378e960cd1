"""Prometheus metrics (prometheus-client), one registry per app so that several apps in one process
(tests) do not collide.

Requests and their latency are counted by the request middleware; the pipeline times decoding; each
batcher reports its batches (size, queue wait, model time); queue depth and model states are read
from the model registry when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.runtime.registry import ModelRegistry, ModelStatus

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "medscan_requests",
            "HTTP requests answered",
            ["model", "version", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "medscan_request_duration_seconds",
            "Time from request to response, per route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "medscan_stage_duration_seconds",
            "Time per image spent in a stage: queue_wait, preprocessing, model",
            ["model", "version", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "medscan_batch_size",
            "Images per model call",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def watch(self, models: ModelRegistry) -> None:
        self.registry.register(_RegistryCollector(models))

    def watch_results(self, counts: Callable[[], tuple[int, int, int]]) -> None:
        """The outbox of results for the PACS: (waiting, delivered, failed attempts), read at scrape time."""
        self.registry.register(_ResultsCollector(counts))

    def observe_request(self, *, model: str, version: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(model, version, route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def observe_preprocessing(self, model: str, version: int | None, seconds: float) -> None:
        self.stage_seconds.labels(model, str(version), "preprocessing").observe(seconds)

    def observe_batch(self, model: str, version: int | None, waits: Sequence[float], model_seconds: float) -> None:
        """One model call: how long each image waited in the queue, and how long the call took."""
        version_label = str(version)
        self.batch_size.labels(model, version_label).observe(len(waits))
        queue_wait = self.stage_seconds.labels(model, version_label, "queue_wait")
        for wait in waits:
            queue_wait.observe(wait)
        self.stage_seconds.labels(model, version_label, "model").observe(model_seconds)


class _ResultsCollector(Collector):
    def __init__(self, counts: Callable[[], tuple[int, int, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        waiting, delivered, failed = self.counts()
        pending = GaugeMetricFamily("medscan_results_waiting", "DICOM SRs in the outbox, not yet taken by the PACS")
        pending.add_metric([], waiting)
        sent = CounterMetricFamily("medscan_results_delivered", "DICOM SRs the PACS has taken")
        sent.add_metric([], delivered)
        failures = CounterMetricFamily("medscan_results_delivery_failures", "Failed attempts to deliver an SR")
        failures.add_metric([], failed)
        yield from (pending, sent, failures)


class _RegistryCollector(Collector):
    """Queue depth and model states, read at scrape time."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "medscan_queue_depth", "Images admitted and waiting for the model", labels=["model", "version"]
        )
        states = GaugeMetricFamily(
            "medscan_model_versions", "Model versions held, by state", labels=["model", "version", "state"]
        )
        counts = {status: 0 for status in ModelStatus}
        for disease in self.models.models:
            for served in self.models.versions(disease).values():
                counts[served.status] += 1
                states.add_metric([disease, str(served.version), served.status.value], 1)
                if served.batcher is not None:
                    depth.add_metric([disease, str(served.version)], served.batcher.depth)
        totals = GaugeMetricFamily("medscan_models", "Model versions by state", labels=["state"])
        for status, count in counts.items():
            totals.add_metric([status.value], count)
        readable = GaugeMetricFamily(
            "medscan_models_folder_readable", "1 when the last look at the models folder succeeded"
        )
        readable.add_metric([], 0 if self.models.scan_error else 1)
        yield from (depth, states, totals, readable)
