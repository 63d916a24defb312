"""The one owner of the accelerator (GPU, or the CPU cores the server is given).

Why a scheduler at all: torch work from several threads at once does not add up unless the threads were
sized for it. Measured on the 2-core machines here, a torch forward with 2 threads drops from 20 to under
1 image/s when another busy thread holds one core. So the accelerator has a fixed number of **slots**,
each one computation with its own share of the cores, and work waits for a free slot, chosen by priority:

- a GPU has one slot (its kernels queue on one device anyway);
- the CPU has one slot per core by default, each computation running on one torch thread
  (`plan_cpu_slots`): on 2 cores, two 1-thread computations side by side did 18.4 photos/s of
  detect + embed against 9.1 for one 2-thread computation (single photos: intra-op threads barely help
  networks this small), and a lone photo was no slower (97 against 102 ms). The rule that matters is
  slots × threads per slot ≤ cores: never more runnable torch threads than cores.

Priorities:

- INTERACTIVE (Verify, Identify, Embed, unary Enroll: someone waits for each answer) goes first,
- BULK (streaming enrolment, clustering) next,
- BACKGROUND (style transfer) last, and it *yields at a fine grain*: a background job calls
  `yield_point()` between network layers; while anything of higher priority waits, yield_point gives the
  accelerator away and blocks until the queue of higher-priority work is empty again.

Within one priority the order is first come, first served (a ticket number breaks ties in the heap), so
no caller of a class can be overtaken by a later one of the same class. Note that most callers of the
face engine are its micro-batchers (one worker thread per slot and class, each carrying many RPCs' photos
at a time), so RPC-level fairness is the batchers' FIFO queues plus this FIFO order.

The accelerator is a priority semaphore: `run(fn, priority=...)` waits for a slot, runs `fn` on the calling
thread while holding it, and returns its result. Work is executed by the threads that ask for it
(gRPC's pool, the micro-batchers), which keeps tracebacks and cancellation simple; the semaphore
guarantees that no more than `slots` of them run accelerator code at once. A background job yields only
when higher-priority work waits, i.e. when every slot is taken.
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
    """A priority semaphore around the accelerator's slots (see the module docstring)."""

    def __init__(self, slots: int = 1) -> None:
        self._cond = threading.Condition()
        self._slots = self._checked(slots)
        self._holders = 0
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, ticket)
        self._tickets = itertools.count()
        self._runs = {p.name: 0 for p in Priority}
        self._waited = {p.name: 0.0 for p in Priority}
        self._yields = 0
        self._local = threading.local()

    # ---------------------------------------------------------------- the lock
    def _acquire(self, priority: Priority, exclusive: bool = False) -> int:
        """Wait for a slot (every slot when exclusive); returns how many slots were taken."""
        ticket = (int(priority), next(self._tickets))
        start = time.perf_counter()
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while self._waiting[0] != ticket or (self._holders > 0 if exclusive else self._holders >= self._slots):
                self._cond.wait()
            heapq.heappop(self._waiting)
            taken = self._slots if exclusive else 1
            self._holders += taken
            self._runs[priority.name] += 1
            self._waited[priority.name] += time.perf_counter() - start
            return taken

    def _release(self, taken: int) -> None:
        with self._cond:
            self._holders -= taken
            self._cond.notify_all()

    @staticmethod
    def _checked(slots: int) -> int:
        if slots < 1:
            raise ValueError(f"the accelerator needs at least one slot, got {slots}")
        return slots

    @property
    def slots(self) -> int:
        """How many computations may hold the accelerator at once."""
        return self._slots

    def set_slots(self, slots: int) -> None:
        """Resize once the device is known (the engine loads after the server starts). Holders keep
        their slot; fewer slots take effect as they release."""
        with self._cond:
            self._slots = self._checked(slots)
            self._cond.notify_all()

    @contextmanager
    def hold(self, priority: Priority = Priority.INTERACTIVE, *, exclusive: bool = False) -> Iterator[None]:
        """Hold a slot of the accelerator for the duration of the block (re-entrant per thread).

        exclusive: hold every slot, for work that spreads over all cores by itself (FAISS clustering's
        OpenMP GEMMs): sharing the cores with a torch computation would oversubscribe them.
        """
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        self._local.taken = self._acquire(priority, exclusive)
        self._local.depth = 1
        self._local.priority = priority
        try:
            yield
        finally:
            self._local.depth = 0
            self._release(self._local.taken)

    def run(
        self, fn: Callable[..., T], *args: object, priority: Priority = Priority.INTERACTIVE, exclusive: bool = False
    ) -> T:
        """Run fn(*args) on this thread while holding a slot (every slot when exclusive); returns its result."""
        with self.hold(priority, exclusive=exclusive):
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
        self._release(self._local.taken)
        # Re-acquire at background priority: we get the accelerator back only when no
        # interactive or bulk work is waiting.
        self._local.taken = self._acquire(Priority.BACKGROUND)

    def stats(self) -> SchedulerStats:
        with self._cond:
            return SchedulerStats(dict(self._runs), dict(self._waited), self._yields)


def plan_cpu_slots(cores: int, torch_threads: int = 0, slots: int = 0) -> tuple[int, int]:
    """(slots, torch threads per slot) for CPU inference on `cores` cores; 0 = choose.

    Default: one slot per core, one thread each (measured above). One number given: the other fills the
    cores. Both given: taken as they are, even if they oversubscribe (the caller warns).
    """
    if cores < 1 or torch_threads < 0 or slots < 0:
        raise ValueError(f"cores must be >= 1 and threads, slots >= 0; got {cores}, {torch_threads}, {slots}")
    if torch_threads and slots:
        return slots, torch_threads
    if torch_threads:
        return max(1, cores // torch_threads), torch_threads
    if slots:
        return slots, max(1, cores // slots)
    return cores, 1
