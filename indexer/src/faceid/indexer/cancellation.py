"""A call's cancel scope: work done for a caller who has gone (cancelled, deadline passed) stops.

Why: under load a request can wait in the micro-batcher longer than its caller's deadline. The caller then
has its DEADLINE_EXCEEDED, but without a scope the server would still decode, detect and embed the photo
(and an Enroll would still commit it): accelerator time spent on an answer nobody reads, taken from the
callers who are still waiting.

The server opens one `CancelScope` per RPC (faceid.server.deadlines) and cancels it when gRPC reports the
call cancelled or expired. The scope travels in a ContextVar, so the engine needs no extra parameter:
- `raise_if_cancelled()` between stages (decode → detect/embed → search, and right before a commit; never
  after one: a committed enrolment is kept, and a retry is answered DUPLICATE);
- `current()` for the MicroBatcher, which registers its queued items' futures with `add_callback`: they are
  cancelled at once and dropped before they reach the accelerator.
Outside any RPC (CLI tools, bulk indexing, tests of the engine) no scope is set and nothing is ever cancelled.
Worker threads do not inherit a ContextVar: code that hands a call's work to other threads copies the
context (faceid.indexer.bulk.ordered_map does).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from faceid.indexer import errors

Callback = Callable[[], None]

_current: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar("faceid_cancel_scope", default=None)


class CancelScope:
    """Cancelled once, by `cancel()` or by its deadline (a time.monotonic() value) passing."""

    def __init__(self, *, deadline: float | None = None) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._error: errors.Cancelled | None = None
        self._callbacks: dict[int, Callback] = {}
        self._next_id = 0

    @property
    def cancelled(self) -> bool:
        return self._error is not None or (self.deadline is not None and time.monotonic() >= self.deadline)

    def error(self) -> errors.Cancelled:
        """The exception that says why the work stopped (DeadlineExceeded when the deadline has passed)."""
        if self._error is not None:
            return self._error
        return deadline_passed()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise self.error()

    def cancel(self, error: errors.Cancelled | None = None) -> None:
        """Cancel the scope and run its callbacks (once; later calls do nothing). Cheap and non-blocking:
        gRPC calls it from its completion thread."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error or errors.Cancelled("the call was cancelled; its work was stopped")
            callbacks, self._callbacks = list(self._callbacks.values()), {}
        for callback in callbacks:
            callback()

    def add_callback(self, callback: Callback) -> Callback:
        """Run `callback` on cancellation (at once if already cancelled); returns a function that unregisters it."""
        with self._lock:
            if self._error is None:
                key = self._next_id
                self._next_id += 1
                self._callbacks[key] = callback
                return lambda: self._remove(key)
        callback()
        return lambda: None

    def _remove(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)


def deadline_passed() -> errors.DeadlineExceeded:
    """The error of work stopped because its call's deadline passed."""
    return errors.DeadlineExceeded("the call's deadline passed; its work was stopped")


def current() -> CancelScope | None:
    """The scope of the call this code runs for, or None outside any (nothing to cancel)."""
    return _current.get()


def raise_if_cancelled() -> None:
    """Raise errors.Cancelled (or DeadlineExceeded) if the current call was cancelled; cheap, call it between stages."""
    scope = _current.get()
    if scope is not None:
        scope.raise_if_cancelled()


def context_with(scope: CancelScope) -> contextvars.Context:
    """A copy of the current context in which `scope` is current: run a call's work in it with `.run()`.
    Nothing leaks into the calling thread's own context (gRPC reuses its threads for other calls)."""
    context = contextvars.copy_context()
    context.run(_current.set, scope)
    return context


@contextmanager
def bound(scope: CancelScope) -> Iterator[CancelScope]:
    """Make `scope` the current one for the code in the block (on this thread, in this context)."""
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)
