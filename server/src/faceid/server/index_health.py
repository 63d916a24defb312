"""The vector index as the server sees it: health follows whether it can answer (a Milvus server away).

- At start-up an unreachable Milvus does not fail the load (no crash loop): the engine comes up, health
  stays NOT_SERVING, and calls that need the index get UNAVAILABLE naming the server.
- While serving, `IndexWatch` asks `engine.probe_index()` every few seconds. Lost: NOT_SERVING (load
  balancers move away). Back: the engine brings the index up to the store (writes committed meanwhile
  may not have reached it) and health turns SERVING again. No restart in either case.

Several watchers (this one, the database's) share one `ServingGate`: SERVING only while all are well,
so one of them coming back never hides the other still being away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0


class ServingGate:
    """Health is SERVING exactly while no named condition is failing ("engine", "database", "vector index",
    "index rebuild", ...). Every writer of health goes through one gate: a rebuild ending, or one watcher
    coming back, never turns SERVING while another condition is still down."""

    def __init__(self, set_serving: Callable[[bool], None], *, down: Iterable[str] = ()) -> None:
        self._set_serving = set_serving
        self._down: set[str] = set(down)
        self._serving = not self._down
        self._lock = threading.Lock()

    def set(self, condition: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._down.discard(condition)
            else:
                self._down.add(condition)
            serving = not self._down
            if serving != self._serving:
                self._serving = serving
                self._set_serving(serving)  # under the lock: two changes never land out of order

    @property
    def down(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._down)


@dataclass(frozen=True)
class HealthSwitch:
    """Sets every service's health (and the server's, "") SERVING or NOT_SERVING; driven by a ServingGate."""

    health: HealthServicer
    services: Sequence[str]

    def set(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.services):
            self.health.set(name, status)


class IndexWatch:
    """Calls `probe()` (engine.probe_index) every `interval` s and reports each change to `report(ok)`.
    A daemon thread; `stop()` ends it."""

    def __init__(
        self, probe: Callable[[], bool], report: Callable[[bool], None], *, ok: bool, interval: float = PROBE_INTERVAL_S
    ) -> None:
        self._probe = probe
        self._report = report
        self._interval = interval
        self.ok = ok
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faceid-index-watch", daemon=True)

    def start(self) -> IndexWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self._interval + 30)

    def check(self) -> bool:
        """One probe; reports a change. (The thread's step, callable directly.)"""
        try:
            ok = self._probe()
        except Exception:  # a fault in the probe itself: keep the last verdict, say why in the log
            log.exception("vector index health check failed unexpectedly")
            return self.ok
        if ok != self.ok:
            self.ok = ok
            self._report(ok)
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()
