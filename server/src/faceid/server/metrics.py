"""Prometheus metrics: per-RPC counts and latencies (labels: method, code), gallery gauges, and how the
accelerator is used (slots, waiting work, micro-batches, photos dropped because their caller went away).

Labels carry only the RPC's method name and status code, never names, metadata, keys or peers: a
gallery's metrics must not leak who is in it. Each server owns its registry (several servers in one
process, as in the tests, must not collide in the global one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from faceid.server.interceptors import Behavior, WrappingInterceptor, code_of
from faceid.server.lifecycle import EngineSlot
from faceid.server.scheduler import AcceleratorScheduler
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class RpcMetrics:
    requests: Counter
    latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RpcMetrics:
        return cls(
            requests=Counter(
                "faceid_rpc_requests", "RPCs handled, by method and final status code", ("method", "code"),
                registry=registry,
            ),
            latency=Histogram(
                "faceid_rpc_duration_seconds", "RPC wall time, by method and final status code", ("method", "code"),
                buckets=_LATENCY_BUCKETS, registry=registry,
            ),
        )

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(method, code.name).inc()
        self.latency.labels(method, code.name).observe(seconds)


def _short(method: str) -> str:
    """'/faceid.v1.FaceId/Identify' -> 'faceid.v1.FaceId/Identify'."""
    return method.lstrip("/")


def _final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    code = code_of(context)
    if code is not None:
        return code
    if failed and not context.is_active():
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every RPC, and logs one line per call; the outermost interceptor of the chain."""

    def __init__(self, metrics: RpcMetrics | None) -> None:
        self._metrics = metrics

    def _record(self, method: str, context: grpc.ServicerContext, start: float, failed: bool) -> None:
        seconds = time.perf_counter() - start
        code = _final_code(context, failed)
        if self._metrics is not None:
            self._metrics.observe(_short(method), code, seconds)
        log.debug(
            "rpc %s %s %.1f ms", _short(method), code.name, seconds * 1e3,
            extra={"rpc": _short(method), "code": code.name, "duration_ms": round(seconds * 1e3, 2)},
        )

    def wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            start, failed = time.perf_counter(), True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                self._record(method, context, start, failed)

        return timed

    def wrap_stream(self, method: str, behavior: Behavior) -> Behavior:
        def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start, failed = time.perf_counter(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:
                self._record(method, context, start, failed)

        return timed


class GalleryCollector(Collector):
    """Gallery size and index state, read from the engine at scrape time (nothing while loading)."""

    def __init__(self, slot: EngineSlot) -> None:
        self._slot = slot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        loaded = GaugeMetricFamily("faceid_engine_loaded", "1 when the model and index are loaded")
        loaded.add_metric([], 1.0 if self._slot.loaded else 0.0)
        yield loaded
        engine = self._slot.peek()
        if engine is None:
            return
        try:
            stats = engine.stats()
        except Exception:  # a scrape must never take the server down; the RPC path reports real faults
            log.warning("could not read gallery stats for metrics", exc_info=True)
            return
        model = stats.model.id  # a model id is public configuration, not personal data
        for name, help_text, value in (
            ("faceid_gallery_identities", "identities enrolled", stats.identities),
            ("faceid_gallery_faces", "faces of the active model", stats.faces),
            ("faceid_gallery_unlabeled_faces", "faces without an identity", stats.unlabeled_faces),
            ("faceid_index_vectors", "vectors in the search index", stats.index.vectors),
            ("faceid_index_consistent", "1 when the index equals the store at the last check",
             1.0 if stats.index.consistent else 0.0),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["model"])
            gauge.add_metric([model], float(value))
            yield gauge


class AcceleratorCollector(Collector):
    """The scheduler's slots and queue, and each micro-batcher's counters, read at scrape time."""

    def __init__(self, scheduler: AcceleratorScheduler, slot: EngineSlot) -> None:
        self._scheduler = scheduler
        self._slot = slot

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        slots = GaugeMetricFamily("faceid_accelerator_slots", "computations that may run on the accelerator at once")
        slots.add_metric([], float(self._scheduler.slots))
        waiting = GaugeMetricFamily("faceid_accelerator_waiting", "pieces of work waiting for a slot now")
        waiting.add_metric([], float(self._scheduler.waiting()))
        stats = self._scheduler.stats()
        runs = CounterMetricFamily("faceid_accelerator_runs", "turns on the accelerator", labels=["priority"])
        waited = CounterMetricFamily("faceid_accelerator_wait_seconds", "time spent waiting for a slot",
                                     labels=["priority"])
        for priority, count in stats.runs.items():
            runs.add_metric([priority.lower()], float(count))
            waited.add_metric([priority.lower()], stats.waited_s[priority])
        yield from (slots, waiting, runs, waited)
        engine = self._slot.peek()
        if engine is None:
            return
        batches = CounterMetricFamily("faceid_batches", "detection + embedding batches run", labels=["kind"])
        items = CounterMetricFamily("faceid_batch_photos", "photos analysed in batches", labels=["kind"])
        dropped = CounterMetricFamily(
            "faceid_cancelled_photos", "photos never analysed because their call was cancelled or expired first",
            labels=["kind"],
        )
        queued = GaugeMetricFamily("faceid_batch_queued_photos", "photos waiting for a batch now", labels=["kind"])
        for kind in ("interactive", "bulk"):
            batcher = engine.pipeline.batcher(kind)
            batches.add_metric([kind], float(batcher.batches))
            items.add_metric([kind], float(batcher.items))
            dropped.add_metric([kind], float(batcher.cancelled))
            queued.add_metric([kind], float(batcher.queued))
        yield from (batches, items, dropped, queued)


@dataclass
class MetricsServer:
    registry: CollectorRegistry
    rpc: RpcMetrics
    http: WSGIServer | None
    port: int

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()


def start_metrics(
    slot: EngineSlot, scheduler: AcceleratorScheduler, port: int, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Create the registry; serve /metrics on addr:port when port > 0 (a port of 0 keeps it in-process only)."""
    registry = CollectorRegistry()
    rpc = RpcMetrics.create(registry)
    registry.register(GalleryCollector(slot))
    registry.register(AcceleratorCollector(scheduler, slot))
    http: WSGIServer | None = None
    bound = 0
    if port > 0:
        http, _thread = start_http_server(port, addr=addr, registry=registry)
        bound = http.server_port
        log.info("metrics on http://%s:%d/metrics", addr, bound)
    return MetricsServer(registry=registry, rpc=rpc, http=http, port=bound)
