"""faceid.v1.StyleTransfer: the thin gRPC translation around StyleEngine.

Errors propagate as faceid.indexer.errors exceptions; the server's error-mapping interceptor
(faceid.server.status) turns them into status codes. Client cancellation and deadlines cancel the job
through `context.add_callback`, so the worker stops at its next step or network layer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import grpc

from faceid.server.style.convert import event_to_proto, request_from_proto
from faceid.server.style.engine import BackgroundScheduler, StyleEngine, StyleLimits
from faceid.server.style.jobs import Done, JobQueue
from faceid.v1 import style_pb2, style_pb2_grpc

if TYPE_CHECKING:
    from faceid.server.config import StyleSettings

SERVICE_NAME: str = style_pb2.DESCRIPTOR.services_by_name["StyleTransfer"].full_name


class StyleTransferServicer(style_pb2_grpc.StyleTransferServicer):
    def __init__(self, engine: StyleEngine) -> None:
        self._engine = engine

    def Stylize(  # noqa: N802 (gRPC method name)
        self, request: style_pb2.StylizeRequest, context: grpc.ServicerContext
    ) -> Iterator[style_pb2.StylizeEvent]:
        remaining = context.time_remaining()
        # time_remaining() is None (or huge) without a deadline.
        deadline = time.monotonic() + remaining if remaining is not None and remaining < 1e7 else None
        job = self._engine.submit(request_from_proto(request), deadline=deadline)
        if not context.add_callback(job.cancel):  # the call already ended
            job.cancel()
        try:
            for event in job.events():
                message = event_to_proto(event.result if isinstance(event, Done) else event)
                if message is not None:
                    yield message
        finally:
            job.cancel()  # no-op when finished; stops the work if the stream was abandoned


def build_engine(settings: StyleSettings, scheduler: BackgroundScheduler | None) -> StyleEngine:
    """The engine for the server's StyleSettings; weights from FACEID_MODEL_DIR (vgg19/, style/)."""
    import torch

    return StyleEngine(
        limits=StyleLimits(max_pixels=settings.max_pixels, max_steps=settings.max_steps),
        queue=JobQueue(max_queued=settings.queue_size, concurrency=settings.concurrency),
        scheduler=scheduler,
        device="cuda" if torch.cuda.is_available() else "cpu",
    )


def register(
    server: grpc.Server, *, settings: StyleSettings, scheduler: BackgroundScheduler | None
) -> Sequence[str]:
    """Add the StyleTransfer servicer to `server`; returns its service names (for health and reflection)."""
    style_pb2_grpc.add_StyleTransferServicer_to_server(StyleTransferServicer(build_engine(settings, scheduler)), server)
    return (SERVICE_NAME,)
