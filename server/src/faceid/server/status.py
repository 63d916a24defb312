"""Engine exceptions → gRPC status codes: the one table, applied once by an interceptor.

Every servicer method raises faceid.indexer.errors classes (the servicer itself raises them too for a
malformed request, so there is one path to a status). Anything that is not one of them is a server
fault: the caller gets INTERNAL with a generic message and the server logs the traceback, never the
other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from faceid.indexer import errors
from faceid.server.interceptors import Behavior, WrappingInterceptor, already_aborted

log = logging.getLogger(__name__)

# Checked in order: the first base class that matches wins, so subclasses map with their family.
STATUS_TABLE: tuple[tuple[type[errors.FaceIdError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    # Usually the client already has its status (the call ended when it was cancelled or expired) and _handle
    # sends nothing; these apply when the engine noticed the passed deadline first.
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
)

RETRY_AFTER_KEY = "retry-after-s"  # trailing metadata on RESOURCE_EXHAUSTED: seconds to wait
INTERNAL_MESSAGE = "internal server error; it has been logged on the server (no detail is sent to callers)"


DATABASE_DOWN_MESSAGE = "the gallery database is unavailable; retry shortly"


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception (INTERNAL for anything not in the table)."""
    for cls, code in STATUS_TABLE:
        if isinstance(exc, cls):
            return code
    if _database_down(exc):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _database_down(exc: BaseException) -> bool:
    # The store turns these into errors.Unavailable; this catches a driver error that escaped elsewhere
    # (a connection lost mid-stream, the pool exhausted). Its text holds SQL, so it is never sent as is.
    from faceid.indexer.store.database import is_unreachable
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError) and is_unreachable(exc)


def abort_with(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    """End the call with the status for `exc` (raises, as context.abort does)."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("unexpected error in %s", method, exc_info=exc, extra={"rpc": method})
        context.abort(code, INTERNAL_MESSAGE)
    if isinstance(exc, errors.QueueFull):
        context.set_trailing_metadata(((RETRY_AFTER_KEY, f"{exc.retry_after_s:g}"),))
    if not isinstance(exc, errors.FaceIdError):  # a driver error mapped by _database_down
        log.warning("%s -> %s: %s", method, code.name, exc, extra={"rpc": method, "code": code.name})
        context.abort(code, DATABASE_DOWN_MESSAGE)
    log.info("%s -> %s: %s", method, code.name, exc, extra={"rpc": method, "code": code.name})
    context.abort(code, str(exc) or type(exc).__name__)


class ErrorMappingInterceptor(WrappingInterceptor):
    """Maps exceptions raised by any behaviour (unary or streaming) through STATUS_TABLE."""

    def wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        def mapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return behavior(request, context)
            except Exception as exc:
                _handle(context, exc, method)
                raise  # only reached when the call had already ended (see _handle)

        return mapped

    def wrap_stream(self, method: str, behavior: Behavior) -> Behavior:
        def mapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from behavior(request, context)
            except Exception as exc:
                _handle(context, exc, method)
                raise

        return mapped


def _handle(context: grpc.ServicerContext, exc: Exception, method: str) -> None:
    # A behaviour that called context.abort itself (or an inner interceptor that did) has already
    # chosen its status; a call the client cancelled has nobody to answer. Leave both alone.
    if already_aborted(context):
        return
    if not context.is_active():
        if isinstance(exc, errors.Cancelled):
            # The work stopped because its caller went away (deadlines.py): an expected end, so no
            # "Exception calling application" traceback from grpcio; abort sends nothing to a finished call
            # and leaves the reason for the metrics.
            context.abort(status_for(exc), str(exc))
        return
    abort_with(context, exc, method)
