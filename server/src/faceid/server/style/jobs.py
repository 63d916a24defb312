"""A bounded queue of background jobs with a fixed number of workers.

Style jobs take seconds to minutes, so they are not run on the RPC's thread: `submit` puts the job in a
bounded queue (QueueFull with a retry hint when it is full) and a worker thread runs it; the caller reads the
job's events (queue position, progress, the result) as they happen and can cancel it at any time.

Workers are threads of this process (at most `concurrency`); what they run decides how it shares the
accelerator (the style engine holds it through the scheduler's `background()`).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from faceid.indexer.errors import QueueFull, Unavailable
from faceid.server.style.control import Cancelled

R = TypeVar("R")

DEFAULT_JOB_SECONDS = 30.0  # retry hint before any job has finished (a Gatys job at 256 px on 2 cores)


@dataclass(frozen=True)
class Queued:
    """The job waits; `ahead` jobs are before it (waiting or running)."""

    ahead: int


@dataclass(frozen=True)
class Started:
    """A worker took the job."""


@dataclass(frozen=True)
class Done(Generic[R]):
    result: R


class JobContext:
    """What a running job sees: whether to stop, and where to report progress."""

    def __init__(self, job: Job[Any]) -> None:
        self._job = job

    def should_stop(self) -> bool:
        return self._job.should_stop()

    def report(self, event: object) -> None:
        self._job._events.put(event)


class Job(Generic[R]):
    """One submitted job; iterate `events()` to follow it, `cancel()` to stop it."""

    def __init__(self, job_id: int, work: Callable[[JobContext], R], deadline: float | None) -> None:
        self.id = job_id
        self._work = work
        self._deadline = deadline  # time.monotonic() value, or None
        self._cancel = threading.Event()
        self._events: queue.Queue[object] = queue.Queue()
        self._finished = threading.Event()
        self._on_cancel: Callable[[Job[Any]], None] | None = None

    def cancel(self) -> None:
        """Stop the job: dropped from the queue if waiting, stopped at its next step if running."""
        if self._cancel.is_set() or self._finished.is_set():
            return
        self._cancel.set()
        if self._on_cancel is not None:
            self._on_cancel(self)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def should_stop(self) -> bool:
        return self._cancel.is_set() or (self._deadline is not None and time.monotonic() >= self._deadline)

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (result, error or cancellation); True if it has."""
        return self._finished.wait(timeout)

    def events(self) -> Iterator[object]:
        """Queued/Started markers and progress events, then Done(result); raises the job's exception."""
        while True:
            event = self._events.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, Done):
                return

    def result(self) -> R:
        """Block until finished; the result, or the job's exception."""
        for event in self.events():
            if isinstance(event, Done):
                return event.result  # type: ignore[no-any-return]
        raise AssertionError("unreachable: events() ends with Done or raises")

    # ---------------------------------------------------------------- run by a worker
    def _run(self) -> float:
        start = time.monotonic()
        try:
            if self.should_stop():
                raise Cancelled("style job cancelled before it started")
            self._events.put(Started())
            self._events.put(Done(self._work(JobContext(self))))
        except BaseException as exc:  # delivered to the reader, who re-raises it on its own thread
            self._events.put(exc)
        finally:
            self._finished.set()
        return time.monotonic() - start


class JobQueue:
    """At most `concurrency` jobs run and `max_queued` wait; `submit` raises QueueFull beyond that."""

    def __init__(self, *, max_queued: int = 8, concurrency: int = 1, name: str = "style") -> None:
        if max_queued < 0 or concurrency < 1:
            raise ValueError(f"need max_queued >= 0 and concurrency >= 1, got {max_queued}, {concurrency}")
        self.max_queued = max_queued
        self.concurrency = concurrency
        self._name = name
        self._cond = threading.Condition()
        self._waiting: deque[Job[Any]] = deque()
        self._running = 0
        self._workers: list[threading.Thread] = []
        self._closed = False
        self._ids = itertools.count(1)
        self._mean_seconds = DEFAULT_JOB_SECONDS
        self._finished_jobs = 0

    # ------------------------------------------------------------------------- public
    def submit(self, work: Callable[[JobContext], R], *, deadline: float | None = None) -> Job[R]:
        """Queue `work(ctx)`; raises QueueFull (with retry_after_s) when full, Unavailable when closed."""
        with self._cond:
            if self._closed:
                raise Unavailable(f"the {self._name} queue is shut down; retry against a running server")
            if self._running + len(self._waiting) >= self.concurrency + self.max_queued:
                retry = self._retry_after_locked()
                raise QueueFull(
                    f"{self._name} queue is full ({self._running} running, {len(self._waiting)} waiting, "
                    f"at most {self.max_queued} may wait); retry in about {retry:.0f} s",
                    retry_after_s=retry,
                )
            job: Job[R] = Job(next(self._ids), work, deadline)
            job._on_cancel = self._drop
            ahead = self._running + len(self._waiting)
            self._waiting.append(job)
            job._events.put(Queued(ahead=ahead))
            self._start_worker_locked()
            self._cond.notify()
            return job

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def close(self, timeout: float | None = 10.0) -> None:
        """Refuse new jobs, cancel waiting and running ones, and wait for the workers to stop."""
        with self._cond:
            self._closed = True
            pending = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for job in pending:
            job._cancel.set()
            job._events.put(Cancelled("style job cancelled: server shutting down"))
            job._finished.set()
        for worker in self._workers:
            self._cancel_running_on(worker)
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # ----------------------------------------------------------------------- internals
    def _retry_after_locked(self) -> float:
        # Roughly when a slot frees up: the jobs ahead, spread over the workers, at the mean job duration.
        return max(1.0, self._mean_seconds * (len(self._waiting) + 1) / self.concurrency)

    def _drop(self, job: Job[Any]) -> None:
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return  # running (it stops itself at the next step) or already finished
        job._events.put(Cancelled("style job cancelled while waiting"))
        job._finished.set()

    def _start_worker_locked(self) -> None:
        self._workers = [w for w in self._workers if w.is_alive()]
        if len(self._workers) < self.concurrency:
            worker = threading.Thread(target=self._work_loop, name=f"{self._name}-worker-{len(self._workers)}", daemon=True)
            worker.current_job = None  # type: ignore[attr-defined]
            self._workers.append(worker)
            worker.start()

    def _cancel_running_on(self, worker: threading.Thread) -> None:
        job = getattr(worker, "current_job", None)
        if job is not None:
            job._cancel.set()

    def _work_loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return
                job = self._waiting.popleft()
                self._running += 1
                me.current_job = job  # type: ignore[attr-defined]
            seconds = job._run()
            with self._cond:
                self._running -= 1
                me.current_job = None  # type: ignore[attr-defined]
                if not job.cancelled:
                    # Exponential moving average of job durations for the retry hint.
                    self._finished_jobs += 1
                    alpha = 0.3 if self._finished_jobs > 1 else 1.0
                    self._mean_seconds = (1 - alpha) * self._mean_seconds + alpha * seconds
