"""How long-running style work is steered from outside: giving the accelerator away and stopping.

- `yield_point()` is called between network layers (forward and backward). The scheduler's version gives the
  accelerator to waiting identification work and blocks until it is done; the default does nothing.
- `should_stop()` is checked at every optimisation step (and between layers); when it returns True the work
  raises `Cancelled` (client cancelled, deadline passed, server shutting down).
"""

from __future__ import annotations

from collections.abc import Callable

YieldPoint = Callable[[], None]
ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """The caller no longer wants the result; the work stopped at the next step."""


def no_yield() -> None:
    return None


def never_stop() -> bool:
    return False


def checked(yield_point: YieldPoint, should_stop: ShouldStop) -> YieldPoint:
    """A yield point that also stops the work (raises Cancelled) as soon as `should_stop()` says so."""

    def point() -> None:
        yield_point()
        if should_stop():
            raise Cancelled("style job cancelled")

    return point
