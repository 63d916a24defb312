"""The one owner of the accelerator (GPU, or the CPU cores the server is given).

Why a scheduler at all: torch work from several threads at once does not add up. Measured on the 2-core
machines here, a torch forward with 2 threads drops from 20 to under 1 image/s when another busy thread
holds one core. So exactly one piece of accelerator work runs at a time, chosen by priority:

- INTERACTIVE (Verify, Identify, Embed, unary Enroll: someone waits for each answer) goes first,
- BULK (streaming enrolment, clustering) next,
- BACKGROUND (style transfer) last, and it *yields at a fine grain*: a background job calls
  `yield_point()` between network layers; while anything of higher priority waits, yield_point gives the
  accelerator away and blocks until the queue of higher-priority work is empty again.

Within one priority the order is first come, first served (a ticket number breaks ties in the heap), so
no caller of a class can be overtaken by a later one of the same class. Note that most callers of the
face engine are its micro-batchers (one thread per class that carries many RPCs' photos at a time), so
RPC-level fairness is the batchers' FIFO queues plus this FIFO order.

The accelerator is a priority lock: `run(fn, priority=...)` waits for its turn, runs `fn` on the calling
thread while holding the lock, and returns its result. Work is executed by the threads that ask for it
(gRPC's pool), which keeps tracebacks and cancellation simple; the lock guarantees that they never run
accelerator code concurrently.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Priority(enum.IntEnum):
    INTERACTIVE = 0
    BULK = 1
    BACKGROUND = 2


@dataclass
class SchedulerStats:
    runs: dict[str, int]
    waited_s: dict[str, float]
    yields: int


class AcceleratorScheduler:
    """A priority lock around the accelerator (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: Priority | None = None
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, ticket)
        self._tickets = itertools.count()
        self._runs = {p.name: 0 for p in Priority}
        self._waited = {p.name: 0.0 for p in Priority}
        self._yields = 0
        self._local = threading.local()

    # ---------------------------------------------------------------- the lock
    def _acquire(self, priority: Priority) -> None:
        ticket = (int(priority), next(self._tickets))
        start = time.perf_counter()
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while self._holder is not None or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._holder = priority
            self._runs[priority.name] += 1
            self._waited[priority.name] += time.perf_counter() - start

    def _release(self) -> None:
        with self._cond:
            self._holder = None
            self._cond.notify_all()

    @contextmanager
    def hold(self, priority: Priority = Priority.INTERACTIVE) -> Iterator[None]:
        """Hold the accelerator for the duration of the block (re-entrant per thread)."""
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        self._acquire(priority)
        self._local.depth = 1
        self._local.priority = priority
        try:
            yield
        finally:
            self._local.depth = 0
            self._release()

    def run(self, fn: Callable[..., T], *args: object, priority: Priority = Priority.INTERACTIVE) -> T:
        """Run fn(*args) on this thread while holding the accelerator; returns its result."""
        with self.hold(priority):
            return fn(*args)

    # ---------------------------------------------------------- background work
    @contextmanager
    def background(self) -> Iterator[Callable[[], None]]:
        """Hold the accelerator for a background job; yields the job's `yield_point` callable."""
        with self.hold(Priority.BACKGROUND):
            yield self.yield_point

    def waiting(self) -> int:
        """How many callers wait for the accelerator now (all priorities)."""
        with self._cond:
            return len(self._waiting)

    def higher_priority_waiting(self, than: Priority = Priority.BACKGROUND) -> bool:
        with self._cond:
            return bool(self._waiting) and self._waiting[0][0] < int(than)

    def yield_point(self) -> None:
        """Called by background work between layers: give the accelerator to waiting work, then resume.

        Cheap when nobody waits (one lock round trip), so it can be called hundreds of times per step.
        Only meaningful on a thread that holds the accelerator at BACKGROUND priority.
        """
        if getattr(self._local, "priority", None) != Priority.BACKGROUND or not getattr(self._local, "depth", 0):
            return
        if not self.higher_priority_waiting():
            return
        with self._cond:
            self._yields += 1
            self._holder = None
            self._cond.notify_all()
        # Re-acquire at background priority: we get the accelerator back only when no
        # interactive or bulk work is waiting.
        self._acquire(Priority.BACKGROUND)

    def stats(self) -> SchedulerStats:
        with self._cond:
            return SchedulerStats(dict(self._runs), dict(self._waited), self._yields)
