"""Requests whose bytes are not a valid message get INVALID_ARGUMENT, not gRPC's INTERNAL.

When a request deserializer raises (truncated bytes, a wrong wire type, invalid UTF-8 in a string field),
grpcio aborts the call with INTERNAL "Exception deserializing request!": a server-fault code for a client
mistake. This interceptor wraps each method's deserializer so that a decoding failure becomes a marker
object, and the behaviour refuses the marker with INVALID_ARGUMENT before any servicer code runs. For
client-streaming methods the check happens message by message, as the servicer reads the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from faceid.indexer import errors

Behavior = Callable[[Any, grpc.ServicerContext], Any]


@dataclass(frozen=True)
class _Malformed:
    reason: str

    @property
    def message(self) -> str:
        return (
            f"the request is not a valid protobuf message for this method ({self.reason}); build it with stubs "
            "generated from proto/faceid/v1"
        )


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, UnicodeDecodeError, ...: all mean "bad bytes from the client"
            return _Malformed(type(exc).__name__)

    return tolerant


def _checked_unary(behavior: Behavior) -> Behavior:
    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return behavior(request, context)

    return checked


def _checked_stream(behavior: Behavior) -> Behavior:
    def requests(iterator: Iterator[Any]) -> Iterator[Any]:
        for request in iterator:
            if isinstance(request, _Malformed):
                # Raised inside the servicer's loop: ErrorMappingInterceptor turns it into INVALID_ARGUMENT.
                raise errors.InvalidRequest(request.message)
            yield request

    def checked(request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return behavior(requests(request_iterator), context)

    return checked


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        codec = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_checked_unary(handler.unary_unary), **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_checked_unary(handler.unary_stream), **codec)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_checked_stream(handler.stream_unary), **codec)
        return grpc.stream_stream_rpc_method_handler(_checked_stream(handler.stream_stream), **codec)
