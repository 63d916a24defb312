"""MicroBatcher: concurrent callers' items share batches, first in first out, failures reach their callers,
and a cancelled caller's items are never processed (neither while queued nor while their batch waits for
the accelerator)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from faceid.indexer import errors
from faceid.indexer.batching import MicroBatcher
from faceid.indexer.cancellation import CancelScope, bound


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


class GatedWork:
    """Doubles numbers; the first batch waits for `release`, so later callers' items pile up meanwhile."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        assert self.release.wait(10)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [2 * i for i in items]


def test_concurrent_callers_share_a_batch_in_arrival_order() -> None:
    work = GatedWork()
    batcher: MicroBatcher[int, int] = MicroBatcher(work, max_batch=4)
    results: dict[int, list[int]] = {}

    def call(items: list[int]) -> None:
        results[items[0]] = batcher.submit_many(items)

    try:
        first = threading.Thread(target=call, args=([0],))
        first.start()
        assert work.started.wait(10)
        callers = []
        for start in (10, 20, 30):  # three callers, 2 + 2 + 2 items, while batch [0] runs
            callers.append(threading.Thread(target=call, args=([start, start + 1],)))
            callers[-1].start()
            _wait_until(lambda n=len(callers): batcher.queued == 2 * n)
        work.release.set()
        for t in (first, *callers):
            t.join(10)
    finally:
        batcher.close()
    # Two batches for three callers: max_batch splits them, in the order they arrived.
    assert work.batches == [[0], [10, 11, 20, 21], [30, 31]]
    assert results == {0: [0], 10: [20, 22], 20: [40, 42], 30: [60, 62]}
    assert (batcher.batches, batcher.items) == (3, 7)


def test_a_failed_batch_fails_only_its_callers() -> None:
    work = GatedWork()
    work.release.set()
    batcher: MicroBatcher[int, int] = MicroBatcher(work, max_batch=8)
    try:
        with pytest.raises(ValueError, match="negative item"):
            batcher.submit_many([1, -1])
        assert batcher.submit(4) == 8  # the worker survives a failed batch
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


def _submit_in_scope(batcher: MicroBatcher[int, int], items: list[int], scope: CancelScope) -> dict[str, object]:
    """Start a caller on a thread, inside `scope`; the dict gets its "result" or "error"."""
    outcome: dict[str, object] = {}

    def call() -> None:
        with bound(scope):
            try:
                outcome["result"] = batcher.submit_many(items)
            except errors.Cancelled as exc:
                outcome["error"] = exc

    outcome["thread"] = threading.Thread(target=call)
    outcome["thread"].start()  # type: ignore[attr-defined]
    return outcome


def test_a_cancelled_callers_queued_items_are_never_processed() -> None:
    work = GatedWork()
    batcher: MicroBatcher[int, int] = MicroBatcher(work, max_batch=8)
    try:
        first = threading.Thread(target=batcher.submit, args=(1,))
        first.start()
        assert work.started.wait(10)  # batch [1] runs; the next callers queue behind it
        gone, kept = CancelScope(), CancelScope()
        cancelled = _submit_in_scope(batcher, [10, 11], gone)
        waiting = _submit_in_scope(batcher, [20], kept)
        _wait_until(lambda: batcher.queued == 3)
        gone.cancel(errors.DeadlineExceeded("deadline passed"))
        cancelled["thread"].join(10)  # type: ignore[attr-defined]
        assert isinstance(cancelled.get("error"), errors.DeadlineExceeded)  # at once, not after the batch
        work.release.set()
        waiting["thread"].join(10)  # type: ignore[attr-defined]
        first.join(10)
    finally:
        batcher.close()
    assert waiting.get("result") == [40]
    assert work.batches == [[1], [20]]  # 10 and 11 never reached `process`
    assert (batcher.items, batcher.cancelled) == (2, 2)


def test_items_cancelled_while_their_batch_waits_for_the_accelerator_are_dropped() -> None:
    # `run` stands for the server's scheduler: the batch has left the queue and waits for its turn.
    waiting, go = threading.Event(), threading.Event()

    def run(turn: Callable[[], object]) -> object:
        waiting.set()
        assert go.wait(10)
        return turn()

    processed: list[list[int]] = []

    def work(items: list[int]) -> list[int]:
        processed.append(list(items))
        return [2 * i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(work, max_batch=8, run=run)
    try:
        scope = CancelScope()
        caller = _submit_in_scope(batcher, [5, 6], scope)
        assert waiting.wait(10)
        assert batcher.queued == 0  # taken into a batch already
        scope.cancel()
        caller["thread"].join(10)  # type: ignore[attr-defined]
        assert isinstance(caller.get("error"), errors.Cancelled)
        go.set()
        _wait_until(lambda: batcher.cancelled == 2)
        assert processed == []  # the turn found nobody waiting: no work at all
        assert batcher.submit(7) == 14  # an unscoped caller (a CLI tool) is never cancelled
    finally:
        batcher.close()
    assert processed == [[7]]
    assert (batcher.batches, batcher.items) == (1, 1)


def test_a_scope_cancelled_before_submitting_queues_nothing() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: items)
    try:
        scope = CancelScope(deadline=time.monotonic() - 1)  # its deadline has passed
        with bound(scope), pytest.raises(errors.DeadlineExceeded):
            batcher.submit(1)
    finally:
        batcher.close()
    assert batcher.submitted == 0


def test_several_workers_run_batches_side_by_side_and_every_caller_gets_its_own_answer() -> None:
    """One worker per accelerator slot: a second batch starts while the first still runs."""
    running = 0
    peak = 0
    arrivals = 0
    lock = threading.Lock()
    both_started = threading.Barrier(2, timeout=10)

    def work(items: list[int]) -> list[int]:
        nonlocal running, peak, arrivals
        with lock:
            running += 1
            peak = max(peak, running)
            arrivals += 1
            first_two = arrivals <= 2
        if first_two:
            both_started.wait()  # the first two batches meet here: only possible if they overlap
        time.sleep(0.005)
        with lock:
            running -= 1
        return [2 * i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(work, max_batch=2, workers=2)
    results: dict[int, int] = {}
    try:
        callers = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.submit(i))) for i in range(20)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(10)
    finally:
        batcher.close()
    assert peak == 2
    assert results == {i: 2 * i for i in range(20)}
    assert batcher.items == 20 and batcher.batches >= 10


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(lambda items: items, workers=0)
