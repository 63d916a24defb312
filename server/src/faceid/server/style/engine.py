"""The style-transfer engine behind the RPC: validation, models, the job queue and the accelerator.

`submit(request)` validates and decodes on the caller's thread (so bad input fails at once, before it takes
a place in the queue), then queues the job. A worker runs it while holding the accelerator at background
priority: the scheduler's `yield_point` is called between network layers, so identification never waits
longer than one layer. No grpc here: the servicer converts to and from the proto.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import torch

from faceid.indexer.errors import InvalidRequest, ModelMissing
from faceid.server.style import fast as fast_mod
from faceid.server.style import gatys
from faceid.server.style import vgg19 as vgg_mod
from faceid.server.style.control import YieldPoint, no_yield
from faceid.server.style.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    Pixels,
    decode,
    encode_png,
    fit_long_side,
)
from faceid.server.style.jobs import Job, JobContext, JobQueue

Method = Literal["optimize", "fast"]
MODEL_DIR_ENV = "FACEID_MODEL_DIR"
DEFAULT_SIZE: dict[str, int] = {"optimize": 256, "fast": 512}
DEFAULT_STEPS = 200


class BackgroundScheduler(Protocol):
    """What the engine needs from faceid.server.scheduler.AcceleratorScheduler."""

    def background(self) -> AbstractContextManager[Callable[[], None]]: ...


@dataclass(frozen=True)
class StyleLimits:
    max_pixels: int = 512 * 512  # output width x height
    max_steps: int = 300
    max_styles: int = 4
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_preview_side: int = 512


@dataclass(frozen=True)
class StyleRequest:
    """One Stylize call in engine terms; `size` 0 and `steps` 0 mean the defaults."""

    content: bytes
    styles: Sequence[tuple[bytes, float]]  # (image bytes, blend weight)
    method: Method = "optimize"
    size: int = 0
    steps: int = 0
    gatys: gatys.GatysOptions = field(default_factory=gatys.GatysOptions)  # size/steps/preserve_color overridden
    strength: float = 1.0  # fast only
    preserve_color: bool = False
    preview_size: int = 128


@dataclass(frozen=True)
class StyleProgress:
    step: int
    total: int
    scale: int
    scales: int
    losses: gatys.Losses
    preview_png: bytes | None


@dataclass(frozen=True)
class StyleOutput:
    png: bytes
    width: int
    height: int
    method: Method
    steps: int
    losses: gatys.Losses | None
    seconds: float
    image: Pixels = field(repr=False)  # (H, W, 3) uint8, for in-process callers (bench, tests)


@dataclass(frozen=True)
class _Prepared:
    request: StyleRequest
    content: Pixels
    styles: list[gatys.StyleSource]
    size: int


def default_model_dir() -> Path:
    """FACEID_MODEL_DIR, where the vgg19/ and style/ folders live."""
    value = os.environ.get(MODEL_DIR_ENV)
    if not value:
        raise ModelMissing(
            f"{MODEL_DIR_ENV} is not set: point it at the folder holding vgg19/ and style/ (the shared models)"
        )
    return Path(value)


class StyleEngine:
    """Validates, queues and runs style jobs; models load on first use and stay loaded."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        limits: StyleLimits | None = None,
        queue: JobQueue | None = None,
        scheduler: BackgroundScheduler | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self.limits = limits or StyleLimits()
        self.queue = queue or JobQueue()
        self._scheduler = scheduler
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self._vgg: vgg_mod.VGG19Features | None = None
        self._fast: fast_mod.ArbitraryStyle | None = None

    @property
    def model_dir(self) -> Path:
        """The folder holding vgg19/ and style/ (FACEID_MODEL_DIR unless given; read when first needed)."""
        return self._model_dir if self._model_dir is not None else default_model_dir()

    @property
    def vgg_dir(self) -> Path:
        return self.model_dir / "vgg19"

    @property
    def fast_dir(self) -> Path:
        return self.model_dir / "style"

    # ---------------------------------------------------------------------------- public
    def submit(self, request: StyleRequest, *, deadline: float | None = None) -> Job[StyleOutput]:
        """Validate, decode and queue; raises InvalidRequest, ModelMissing or QueueFull before queueing.

        `deadline` is a time.monotonic() value after which the job stops (as if cancelled).
        """
        prepared = self.prepare(request)
        if request.method == "optimize":
            vgg_mod.check_files(self.vgg_dir)
        else:
            fast_mod.check_files(self.fast_dir)
        return self.queue.submit(lambda ctx: self.run(prepared, ctx), deadline=deadline)

    def prepare(self, request: StyleRequest) -> _Prepared:
        """Check limits and options, decode the images; raises InvalidRequest naming the field."""
        limits = self.limits
        if request.method not in DEFAULT_SIZE:
            raise InvalidRequest(f"method must be 'optimize' or 'fast', got {request.method!r}")
        if not request.styles:
            raise InvalidRequest("at least one style image is needed")
        if len(request.styles) > limits.max_styles:
            raise InvalidRequest(f"{len(request.styles)} style images; at most {limits.max_styles} may be blended")
        size = request.size or DEFAULT_SIZE[request.method]
        if size < 0:
            raise InvalidRequest(f"size must be >= 0 (0 = default), got {size}")
        steps = request.steps or DEFAULT_STEPS
        if request.method == "optimize" and not 0 < steps <= limits.max_steps:
            raise InvalidRequest(f"steps must be in 1..{limits.max_steps} (0 = default {DEFAULT_STEPS}), got {steps}")
        if not 0 <= request.preview_size <= limits.max_preview_side:
            raise InvalidRequest(f"preview_size must be in 0..{limits.max_preview_side}, got {request.preview_size}")
        content = decode(
            request.content, what="content image", max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels
        )
        h, w = fit_long_side(*content.shape[:2], size)
        if h * w > limits.max_pixels:
            side = int(size * (limits.max_pixels / (h * w)) ** 0.5)
            raise InvalidRequest(
                f"output {w}x{h} = {w * h} pixels exceeds the server's maximum of {limits.max_pixels}; "
                f"ask for size <= {side}"
            )
        styles = [
            gatys.StyleSource(
                decode(data, what=f"style image {i}", max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels),
                weight,
            )
            for i, (data, weight) in enumerate(request.styles)
        ]
        if request.method == "optimize":
            options = replace(request.gatys, size=size, steps=steps, preserve_color=request.preserve_color)
            gatys.validate(options, styles)
            request = replace(request, gatys=options)
        else:
            fast_mod.validate(self._fast_options(request, size), styles)
        return _Prepared(request=request, content=content, styles=styles, size=size)

    def run(self, prepared: _Prepared, ctx: JobContext | None = None) -> StyleOutput:
        """Run one prepared job now on this thread (the queue's workers call this)."""
        start = time.monotonic()
        request = prepared.request
        should_stop = ctx.should_stop if ctx is not None else (lambda: False)
        with self._accelerator() as yield_point:
            if request.method == "optimize":
                vgg = self.vgg()
                preview_side = request.preview_size or 128

                def on_progress(p: gatys.Progress) -> None:
                    if ctx is None:
                        return
                    png = encode_png(p.preview, long_side=preview_side) if p.preview is not None else None
                    ctx.report(StyleProgress(p.step, p.total, p.scale, p.scales, p.losses, png))

                result = gatys.stylize(
                    prepared.content,
                    prepared.styles,
                    request.gatys,
                    vgg=vgg,
                    on_progress=on_progress,
                    yield_point=yield_point,
                    should_stop=should_stop,
                )
                image, steps, losses = result.image, result.steps, result.losses
            else:
                image = self.fast().stylize(
                    prepared.content,
                    prepared.styles,
                    self._fast_options(request, prepared.size),
                    yield_point=yield_point,
                    should_stop=should_stop,
                )
                steps, losses = 0, None
        png = encode_png(image)
        return StyleOutput(
            png=png,
            width=image.shape[1],
            height=image.shape[0],
            method=request.method,
            steps=steps,
            losses=losses,
            seconds=time.monotonic() - start,
            image=image,
        )

    def vgg(self) -> vgg_mod.VGG19Features:
        with self._lock:
            if self._vgg is None:
                self._vgg = vgg_mod.load_vgg19(self.vgg_dir, self.device)
            return self._vgg

    def fast(self) -> fast_mod.ArbitraryStyle:
        with self._lock:
            if self._fast is None:
                self._fast = fast_mod.ArbitraryStyle.load(self.fast_dir, self.device)
            return self._fast

    def close(self) -> None:
        """Cancel queued and running jobs and stop the workers (server shutdown)."""
        self.queue.close()

    # ------------------------------------------------------------------------- internals
    @staticmethod
    def _fast_options(request: StyleRequest, size: int) -> fast_mod.FastOptions:
        return fast_mod.FastOptions(size=size, strength=request.strength, preserve_color=request.preserve_color)

    @contextmanager
    def _accelerator(self) -> Iterator[YieldPoint]:
        if self._scheduler is None:
            yield no_yield
            return
        with self._scheduler.background() as yield_point:
            yield yield_point
