"""Typed errors for failed calls: one class per gRPC status the faceid contract uses.

Catch `FaceIdError` for any failure, or a subclass (`NotFound`, `InvalidArgument`, ...) for one kind.
Each carries the status `code`, the server's `message` and, for `ResourceExhausted`, `retry_after_s`.
"""

from __future__ import annotations

import grpc


class FaceIdError(Exception):
    """A faceid call failed; `code` is the gRPC status, `message` the server's explanation."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    #: True when the request itself was at fault (retrying it unchanged cannot help).
    client_fault: bool = False

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(FaceIdError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    client_fault = True


class NotFound(FaceIdError):
    code = grpc.StatusCode.NOT_FOUND
    client_fault = True


class AlreadyExists(FaceIdError):
    code = grpc.StatusCode.ALREADY_EXISTS
    client_fault = True


class FailedPrecondition(FaceIdError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    client_fault = True


class Unauthenticated(FaceIdError):
    code = grpc.StatusCode.UNAUTHENTICATED
    client_fault = True


class PermissionDenied(FaceIdError):
    code = grpc.StatusCode.PERMISSION_DENIED
    client_fault = True


class ResourceExhausted(FaceIdError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, code: grpc.StatusCode | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s


class Unavailable(FaceIdError):
    """The server is starting, shutting down or unreachable: retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FaceIdError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(FaceIdError):
    """A server fault (logged on the server), never the caller's mistake."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[FaceIdError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unauthenticated, PermissionDenied,
        ResourceExhausted, Unavailable, DeadlineExceeded, Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> FaceIdError:
    """The typed error for a failed call (`grpc.RpcError` raised by a stub)."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    message = (error.details() if hasattr(error, "details") else "") or code.name.lower()  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, FaceIdError)
    if cls is ResourceExhausted:
        return ResourceExhausted(message, code, retry_after_s=_retry_after(error))
    return cls(message, code)


def _retry_after(error: grpc.RpcError) -> float | None:
    try:
        trailers = error.trailing_metadata() or ()  # type: ignore[attr-defined]
    except AttributeError:
        return None
    for key, value in trailers:
        if key == "retry-after-s":
            try:
                return float(value)
            except ValueError:
                return None
    return None
