"""The accelerator scheduler: one holder at a time, interactive first, background yields at yield points."""

from __future__ import annotations

import threading
import time

from faceid.server.scheduler import AcceleratorScheduler, Priority


def test_only_one_holder_at_a_time() -> None:
    sched = AcceleratorScheduler()
    active = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.005)
        with lock:
            active -= 1

    threads = [threading.Thread(target=sched.run, args=(work,), kwargs={"priority": p})
               for p in [Priority.INTERACTIVE, Priority.BULK] * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1
    assert sum(sched.stats().runs.values()) == 16


def test_waiting_interactive_work_goes_before_waiting_bulk_work() -> None:
    sched = AcceleratorScheduler()
    order: list[str] = []
    release = threading.Event()
    holder = threading.Thread(target=sched.run, args=(release.wait,), kwargs={"priority": Priority.BULK})
    holder.start()
    time.sleep(0.05)
    bulk = threading.Thread(target=sched.run, args=(lambda: order.append("bulk"),), kwargs={"priority": Priority.BULK})
    bulk.start()
    time.sleep(0.05)
    inter = threading.Thread(target=sched.run, args=(lambda: order.append("interactive"),))
    inter.start()
    time.sleep(0.05)
    release.set()
    for t in (holder, bulk, inter):
        t.join()
    assert order == ["interactive", "bulk"]


def test_background_job_yields_at_its_next_yield_point() -> None:
    sched = AcceleratorScheduler()
    layer_s = 0.01
    started = threading.Event()
    stop = threading.Event()
    layers_done = 0

    def style_job() -> None:
        nonlocal layers_done
        with sched.background() as yield_point:
            started.set()
            while not stop.is_set():
                time.sleep(layer_s)  # one "layer" of work
                layers_done += 1
                yield_point()

    bg = threading.Thread(target=style_job)
    bg.start()
    started.wait()
    waits = []
    for _ in range(5):
        t0 = time.perf_counter()
        sched.run(lambda: time.sleep(0.002))
        waits.append(time.perf_counter() - t0)
        time.sleep(0.02)
    stop.set()
    bg.join()
    # An interactive call waits at most about one layer of background work, not the whole job.
    assert max(waits) < 10 * layer_s, waits
    assert sched.stats().yields >= 5
    assert layers_done > 5


def test_hold_is_reentrant_on_one_thread() -> None:
    sched = AcceleratorScheduler()
    with sched.hold(Priority.BULK):
        assert sched.run(lambda: 42) == 42


def test_first_come_first_served_within_a_priority() -> None:
    sched = AcceleratorScheduler()
    order: list[str] = []
    release = threading.Event()
    holder = threading.Thread(target=sched.run, args=(release.wait,))
    holder.start()
    deadline = time.monotonic() + 10
    while not sched.stats().runs["INTERACTIVE"]:  # the holder has the accelerator
        assert time.monotonic() < deadline
        time.sleep(0.002)
    waiters = []
    for i, priority in enumerate([Priority.BULK, Priority.INTERACTIVE, Priority.BULK, Priority.INTERACTIVE,
                                  Priority.INTERACTIVE, Priority.BULK]):
        name = f"{priority.name.lower()}-{i}"
        waiters.append(threading.Thread(target=sched.run, args=(order.append, name), kwargs={"priority": priority}))
        waiters[-1].start()
        while sched.waiting() < i + 1:  # queued before the next one arrives
            assert time.monotonic() < deadline
            time.sleep(0.002)
    release.set()
    for t in (holder, *waiters):
        t.join(10)
    assert order == ["interactive-1", "interactive-3", "interactive-4", "bulk-0", "bulk-2", "bulk-5"]
