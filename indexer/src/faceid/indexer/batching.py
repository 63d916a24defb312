"""Micro-batching: concurrent callers' items are processed together in one accelerator turn.

Throughput on the accelerator comes from batches (InceptionResnetV1 on 2 CPU cores: 20 images/s at
batch 1, about 48 at batch 8), but each RPC brings one photo. A MicroBatcher has `workers` threads (one
per accelerator slot: server/scheduler.py) that each wait for items, take everything queued (up to
`max_batch`) and process it as one batch; callers block on their own item's result. There is no
artificial delay: while the batches run, the next ones fill up by themselves, so an idle server answers
a lone request at once and a busy one batches more. Items are taken first in, first out: a caller is
never overtaken by a later caller's items (with several workers, later items may finish first).

A caller that is cancelled (its RPC cancelled or past its deadline: cancellation.py) gets its items back
out: their futures are cancelled at once, the caller raises errors.Cancelled, and the worker drops them.
An item counts as started only when its batch gets the accelerator (`run`, the server's scheduler), not
when it leaves the queue, so an item whose caller went away while the batch waited for the accelerator is
still dropped there: no detection or embedding runs for it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any, Generic, TypeVar

from faceid.indexer import cancellation

T = TypeVar("T")
R = TypeVar("R")


Entry = tuple[T, Future[R]]  # an item and its caller's future


def _run_directly(turn: Callable[[], Any]) -> Any:
    return turn()


class MicroBatcher(Generic[T, R]):
    """`process(items) -> results` is one batch's work; `run(turn)` runs a turn of it (e.g. holding the
    accelerator through the server's scheduler) and returns the turn's result; by default it just calls it."""

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 16,
        name: str = "batcher",
        run: Callable[[Callable[[], Any]], Any] = _run_directly,
        workers: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._process = process
        self._run = run
        self._max_batch = max_batch
        self._queue: deque[Entry[T, R]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.submitted = 0  # items handed in (counters for metrics and tests)
        self.batches = 0
        self.items = 0  # items processed
        self.cancelled = 0  # items dropped unprocessed because their caller was cancelled
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}" if workers > 1 else name, daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit_many(self, items: Sequence[T]) -> list[R]:
        """Process items (possibly together with other callers' items); blocks until all are done.

        Raises errors.Cancelled (or DeadlineExceeded) when the current call's cancel scope is cancelled
        first; its items still waiting are then never processed.
        """
        scope = cancellation.current()
        if scope is not None:
            scope.raise_if_cancelled()
        futures: list[Future[R]] = [Future() for _ in items]
        # Registered before queueing: a cancellation from now on reaches every item (Future.cancel does
        # nothing to an item already in a running batch; the caller's next stage check stops it then).
        unregister = scope.add_callback(lambda: [f.cancel() for f in futures]) if scope is not None else None
        try:
            with self._cond:
                if self._closed:
                    raise RuntimeError("the batcher is closed (the server is shutting down)")
                self._queue.extend(zip(items, futures, strict=True))
                self.submitted += len(items)
                self._cond.notify()
            return [f.result() for f in futures]
        except CancelledError:
            assert scope is not None  # only a scope cancels futures
            raise scope.error() from None
        finally:
            if unregister is not None:
                unregister()

    def submit(self, item: T) -> R:
        return self.submit_many([item])[0]

    @property
    def queued(self) -> int:
        """Items waiting for a batch now (not counting the batch being processed)."""
        with self._cond:
            return len(self._queue)

    def _claim(self, batch: list[Entry[T, R]]) -> list[Entry[T, R]]:
        """The batch's items still wanted, marked running (from now on a cancellation cannot drop them)."""
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        with self._cond:
            self.cancelled += len(batch) - len(live)
        return live

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch: list[Entry[T, R]] = []
                while self._queue and len(batch) < self._max_batch:
                    entry = self._queue.popleft()
                    if entry[1].cancelled():  # its caller has gone: it takes no place in the batch
                        self.cancelled += 1
                    else:
                        batch.append(entry)
            if batch:
                self._process_batch(batch)

    def _process_batch(self, batch: list[Entry[T, R]]) -> None:
        claimed: list[Entry[T, R]] | None = None

        def turn() -> Sequence[R]:
            # Claimed only now, with the accelerator held: items whose callers were cancelled while the
            # batch waited for it are dropped here.
            nonlocal claimed
            claimed = self._claim(batch)
            return self._process([item for item, _ in claimed]) if claimed else []

        try:
            results = self._run(turn)
            if claimed is None:
                raise RuntimeError("the batch runner returned without running the batch")
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must learn of the failure
            if claimed is None:  # the runner failed before the turn began
                claimed = self._claim(batch)
            for _, fut in claimed:
                fut.set_exception(exc)
            return
        if claimed:
            with self._cond:  # several workers count here
                self.batches += 1
                self.items += len(claimed)
        for (_, fut), result in zip(claimed, results, strict=True):
            fut.set_result(result)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
