"""Deadlines and cancellation reach the engine: every RPC runs inside a cancel scope (faceid.indexer.cancellation).

When a client cancels a call or its deadline passes, gRPC answers the client (CANCELLED, DEADLINE_EXCEEDED)
but the servicer's thread goes on. So this interceptor runs each call's behaviour in a context whose cancel
scope knows the call's deadline, and cancels the scope from `context.add_callback`. gRPC runs that callback
when the call terminates for any reason: cancelled, expired, server stopping, or answered normally; the
last is told apart by a flag set when the behaviour has returned, so a call that finished is never
"cancelled" after the fact. The engine then stops between stages, the micro-batcher drops the call's
photos that have not reached the accelerator yet, and an Enroll stops before its commit (never after it).

Innermost in the chain, so the engine's errors.Cancelled passes through ErrorMappingInterceptor, which
sends nothing when the client already has its status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from faceid.indexer import errors
from faceid.indexer.cancellation import CancelScope, context_with, deadline_passed
from faceid.server.interceptors import Behavior, WrappingInterceptor

NO_DEADLINE_S = 1e9  # gRPC reports "no deadline" as a deadline decades away


def _open(context: grpc.ServicerContext) -> tuple[CancelScope, threading.Event]:
    """The call's scope, cancelled by gRPC's termination callback unless the returned event is set first."""
    remaining = context.time_remaining()
    deadline = time.monotonic() + remaining if remaining is not None and remaining < NO_DEADLINE_S else None
    scope = CancelScope(deadline=deadline)
    finished = threading.Event()

    def on_termination() -> None:  # on gRPC's completion thread: must not block
        if finished.is_set():
            return
        if scope.deadline is not None and time.monotonic() >= scope.deadline - 0.05:
            scope.cancel(deadline_passed())
        else:
            scope.cancel(errors.Cancelled("the call was cancelled by its client; its work was stopped"))

    if not context.add_callback(on_termination):  # the call has already ended
        on_termination()
    return scope, finished


class CancellationInterceptor(WrappingInterceptor):
    """Runs every behaviour inside its call's cancel scope (see the module docstring)."""

    def wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        def scoped(request: Any, context: grpc.ServicerContext) -> Any:
            scope, finished = _open(context)
            try:
                return context_with(scope).run(behavior, request, context)
            finally:
                finished.set()

        return scoped

    def wrap_stream(self, method: str, behavior: Behavior) -> Behavior:
        def scoped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            scope, finished = _open(context)
            # Each step of the response generator runs in the scope's context: a ContextVar set inside a
            # generator would otherwise leak into the gRPC thread between steps.
            run: Callable[..., Any] = context_with(scope).run
            responses = run(behavior, request, context)
            try:
                while True:
                    try:
                        response = run(next, responses)
                    except StopIteration:
                        return
                    yield response
            except GeneratorExit:  # closed before its end: nobody reads the rest, stop the work in flight
                scope.cancel(errors.Cancelled("the response stream was closed early; its work was stopped"))
                raise
            finally:
                finished.set()
                close = getattr(responses, "close", None)
                if close is not None:  # the servicer's generator cleans up (ordered_map stops reading) in the scope
                    run(close)

        return scoped
