"""Where accelerator work runs, and how many CPU threads it may use."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (affinity/cgroup-aware where the OS tells), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(requested: str) -> str:
    """"auto" → "cuda" when torch sees a GPU, else "cpu"; explicit values are checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        from faceid.indexer.errors import FailedPrecondition

        raise FailedPrecondition(f"device {requested!r} was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return requested


def configure_torch_threads(threads: int | None = None) -> int:
    """Size torch's intra-op pool to the cores we were given, once, before any model runs.

    Oversubscription is the costliest mistake on small machines: measured here, a 2-thread forward on
    2 cores falls from 20 to under 1 image/s when another busy thread holds a core. `threads` is per
    computation: the server's scheduler runs at most `slots` computations at once and sizes
    slots × threads to the cores (server/scheduler.py). None = every usable core (one computation).
    """
    import torch

    n = threads or available_cores()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or work has started: harmless
        pass
    return n
