"""A small base for server interceptors that wrap every RPC's behaviour, whatever its streaming shape.

gRPC's `ServerInterceptor` hands over an `RpcMethodHandler`; wrapping it means rebuilding the handler of
the same kind (unary/stream request × unary/stream response) around a new behaviour. That plumbing is
written once here, so each interceptor (error mapping, metrics, and later authentication) states only
what it does around a call.

The chain is the `interceptors=[...]` list given to `grpc.server`; the first one is the outermost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]


class WrappingInterceptor(grpc.ServerInterceptor):
    """Subclasses implement `wrap_unary` and `wrap_stream` (the behaviour returns an iterator)."""

    def wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    def wrap_stream(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return None
        method = handler_call_details.method
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self.wrap_unary(method, handler.unary_unary), **codec)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self.wrap_unary(method, handler.stream_unary), **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self.wrap_stream(method, handler.unary_stream), **codec)
        return grpc.stream_stream_rpc_method_handler(self.wrap_stream(method, handler.stream_stream), **codec)


def code_of(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status a behaviour already set (set_code or abort), or None."""
    try:
        return context.code()  # type: ignore[attr-defined,no-any-return]
    except (AttributeError, NotImplementedError):
        return None


def already_aborted(context: grpc.ServicerContext) -> bool:
    code = code_of(context)
    return code is not None and code != grpc.StatusCode.OK

