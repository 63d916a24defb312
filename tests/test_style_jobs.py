"""The bounded style job queue (no models): capacity, QueueFull hint, cancellation, events, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from faceid.indexer.errors import QueueFull, Unavailable
from faceid.server.style.control import Cancelled
from faceid.server.style.jobs import Done, JobContext, JobQueue, Queued, Started


def _blocking_work(release: threading.Event, started: threading.Event | None = None):  # type: ignore[no-untyped-def]
    def work(ctx: JobContext) -> str:
        if started is not None:
            started.set()
        while not release.wait(0.01):
            if ctx.should_stop():
                raise Cancelled("stopped")
        ctx.report("progress")
        return "done"

    return work


def test_events_then_result() -> None:
    queue = JobQueue(max_queued=2, concurrency=1)
    release = threading.Event()
    job = queue.submit(_blocking_work(release))
    release.set()
    events = list(job.events())
    assert events == [Queued(ahead=0), Started(), "progress", Done("done")]
    queue.close()


def test_capacity_is_running_plus_waiting_and_full_raises_with_a_hint() -> None:
    queue = JobQueue(max_queued=2, concurrency=1)
    release, started = threading.Event(), threading.Event()
    running = queue.submit(_blocking_work(release, started))
    assert started.wait(10)
    waiting = [queue.submit(_blocking_work(release)) for _ in range(2)]
    assert [next(iter(job.events())) for job in waiting] == [Queued(ahead=1), Queued(ahead=2)]
    with pytest.raises(QueueFull) as info:
        queue.submit(_blocking_work(release))
    assert info.value.retry_after_s >= 1.0
    # Cancelling a waiting job frees its place at once.
    waiting[0].cancel()
    with pytest.raises(Cancelled):
        waiting[0].result()
    extra = queue.submit(_blocking_work(release))
    release.set()
    assert running.result() == "done" and waiting[1].result() == "done" and extra.result() == "done"
    queue.close()


def test_cancel_stops_a_running_job_and_close_refuses_new_ones() -> None:
    queue = JobQueue(max_queued=1, concurrency=1)
    release, started = threading.Event(), threading.Event()
    job = queue.submit(_blocking_work(release, started))
    assert started.wait(10)
    job.cancel()
    with pytest.raises(Cancelled):
        job.result()
    assert job.wait(10) and queue.running == 0
    queue.close()
    with pytest.raises(Unavailable):
        queue.submit(_blocking_work(release))


def test_deadline_acts_like_cancel() -> None:
    queue = JobQueue(max_queued=1, concurrency=1)
    job = queue.submit(_blocking_work(threading.Event()), deadline=time.monotonic() + 0.2)
    with pytest.raises(Cancelled):
        job.result()
    queue.close()
