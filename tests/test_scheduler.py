"""The accelerator scheduler: at most `slots` holders at once, interactive first, background yields at yield points."""

from __future__ import annotations

import threading
import time

from faceid.server.scheduler import AcceleratorScheduler, Priority


def _peak_concurrency(sched: AcceleratorScheduler, jobs: list[tuple[Priority, bool]], hold_s: float = 0.02) -> int:
    """Run the jobs from one thread each; the most that ever ran at once."""
    active = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(hold_s)
        with lock:
            active -= 1

    threads = [threading.Thread(target=sched.run, args=(work,), kwargs={"priority": p, "exclusive": e})
               for p, e in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return peak


def test_only_one_holder_at_a_time() -> None:
    sched = AcceleratorScheduler()
    assert _peak_concurrency(sched, [(Priority.INTERACTIVE, False), (Priority.BULK, False)] * 8, hold_s=0.005) == 1
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


def test_slots_bound_how_many_computations_run_at_once() -> None:
    sched = AcceleratorScheduler(slots=3)
    assert _peak_concurrency(sched, [(Priority.INTERACTIVE, False), (Priority.BULK, False)] * 6) == 3
    assert sum(sched.stats().runs.values()) == 12
    sched.set_slots(2)
    assert _peak_concurrency(sched, [(Priority.INTERACTIVE, False)] * 8) == 2


def test_exclusive_work_runs_alone_on_a_many_slot_accelerator() -> None:
    """Clustering spreads over every core itself: it must not share them with a torch computation."""
    sched = AcceleratorScheduler(slots=2)
    running: list[str] = []
    overlaps: list[list[str]] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        with lock:
            running.append(name)
            if len(running) > 1 and any(n.startswith("exclusive") for n in running):
                overlaps.append(list(running))
        time.sleep(0.01)
        with lock:
            running.remove(name)

    threads = [
        threading.Thread(target=sched.run, args=(work, f"{'exclusive' if i % 3 == 0 else 'slot'}-{i}"),
                         kwargs={"priority": Priority.BULK, "exclusive": i % 3 == 0})
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlaps, overlaps
    assert sched.stats().runs["BULK"] == 12


def test_background_keeps_its_slot_while_another_slot_is_free() -> None:
    """With two slots, interactive work uses the free one: the style job is not asked to yield."""
    sched = AcceleratorScheduler(slots=2)
    started = threading.Event()
    stop = threading.Event()

    def style_job() -> None:
        with sched.background() as yield_point:
            started.set()
            while not stop.is_set():
                time.sleep(0.005)
                yield_point()

    bg = threading.Thread(target=style_job)
    bg.start()
    started.wait()
    t0 = time.perf_counter()
    for _ in range(5):
        sched.run(lambda: time.sleep(0.002))
    elapsed = time.perf_counter() - t0
    stop.set()
    bg.join()
    assert sched.stats().yields == 0
    assert elapsed < 1.0


def test_cpu_slot_plan_never_oversubscribes_by_default() -> None:
    from faceid.server.scheduler import plan_cpu_slots

    assert plan_cpu_slots(2) == (2, 1)  # one 1-thread computation per core
    assert plan_cpu_slots(16) == (16, 1)
    assert plan_cpu_slots(16, torch_threads=4) == (4, 4)
    assert plan_cpu_slots(2, torch_threads=2) == (1, 2)  # the old single-computation layout
    assert plan_cpu_slots(3, torch_threads=2) == (1, 2)
    assert plan_cpu_slots(8, slots=3) == (3, 2)
    assert plan_cpu_slots(2, slots=4) == (4, 1)  # asked for: the server warns
    assert plan_cpu_slots(2, torch_threads=2, slots=2) == (2, 2)
    for cores in range(1, 65):
        for threads in range(0, 9):
            slots, per = plan_cpu_slots(cores, torch_threads=threads)
            assert slots >= 1 and per >= 1
            assert slots * per <= max(cores, per)


def test_server_sizes_its_cpu_accelerator_from_the_cores_and_the_flags() -> None:
    import torch
    from faceid.server.app import size_accelerator
    from faceid.server.cli import load_settings
    from faceid.indexer.runtime import available_cores

    before = torch.get_num_threads()
    try:
        sched = AcceleratorScheduler()
        assert size_accelerator(load_settings(device="cpu"), sched) == available_cores()
        assert sched.slots == available_cores() and torch.get_num_threads() == 1
        # `faceid-server --torch-threads N` alone: the slots fill the rest of the cores
        settings = load_settings(device="cpu", torch_threads=available_cores())
        assert size_accelerator(settings, sched) == 1 and torch.get_num_threads() == available_cores()
        # `--accelerator-slots N` reaches the scheduler settings
        settings = load_settings(device="cpu", accelerator_slots=3, torch_threads=1)
        assert settings.scheduler.slots == 3
        assert size_accelerator(settings, sched) == 3 and sched.slots == 3
    finally:
        torch.set_num_threads(before)
