"""MicroBatcher: concurrent callers' items share batches, first in first out, failures reach their callers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from faceid.indexer.batching import MicroBatcher


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
