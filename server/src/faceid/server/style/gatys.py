"""Neural style transfer by optimisation (Gatys, Ecker, Bethge 2016, "Image Style Transfer Using CNNs").

The generated image G minimises  J(G) = α·J_content(C, G) + β·J_style(S, G) + tv·J_tv(G)  in VGG-19 feature
space (see vgg19.py for the Caffe preprocessing this needs):

- J_content = 1/(4·nH·nW·nC) · Σ (a_C − a_G)²  at relu4_2 (the lectures' normalisation).
- J_style   = Σ_l λ_l · J_style^l,  J_style^l = 1/(2·nH·nW·nC)² · Σ_ij (G^S_ij − G^G_ij)²  with the Gram
  matrix G = A·Aᵀ of the (nC, nH·nW) activations A (the lectures' normalisation, also Gatys' E_l).
  Implemented in the equivalent, size-independent form Σ (Ĝ^S − Ĝ^G)² / (4·nC²) with Ĝ = A·Aᵀ/(nH·nW):
  identical when S and G have the same size, and still meaningful when the style image has another size.
- J_tv = 255²·(mean (∂x G)² + mean (∂y G)²): squared neighbour differences, on the 0..255 scale.

Defaults reproduce the recipe verified in models/vgg19/README.md (content MSE + 10·Σ_l MSE(Ĝ)/nC_l²): in the
lectures' normalisation that is α = 1, β = 10, λ_l = 1/nC_l². Because the Caffe activations are large
(relu4_1 ≈ 670), deeper layers dominate J_style even with λ falling as 1/nC².

Several style images blend by their weights: the target Gram is the weighted mean of their Grams, which has the
same minimiser as the weighted sum of the separate style losses. Large outputs are made coarse to fine: the
first scales run at 1/2, 1/4 ... of the size (cheap steps) and each result, upsampled, starts the next one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from faceid.indexer.errors import InvalidRequest
from faceid.server.style.color import preserve_color as _preserve_color
from faceid.server.style.control import Cancelled, ShouldStop, YieldPoint, checked, never_stop, no_yield
from faceid.server.style.images import Pixels, fit_long_side, resize, to_pixels, to_tensor
from faceid.server.style.vgg19 import LAYER_CHANNELS, VGG19Features, VggFeatures, preprocess

STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
DEFAULT_LAYER_WEIGHTS: dict[str, float] = {name: 1.0 / LAYER_CHANNELS[name] ** 2 for name in STYLE_LAYERS}
MIN_SIDE = 32  # VGG-19 needs 32 px to reach relu5_1 (after four pools)
MIN_SCALE_SIDE = 128  # coarse scales below this teach nothing useful
LBFGS_HISTORY = 20  # torch's default of 100 keeps 200 image-sized vectors: 600 MB at 512 px

Init = Literal["content", "noise", "noisy-content"]
Optimizer = Literal["lbfgs", "adam"]
INITS: tuple[str, ...] = ("content", "noise", "noisy-content")
OPTIMIZERS: tuple[str, ...] = ("lbfgs", "adam")
DEFAULT_LR: dict[str, float] = {"lbfgs": 1.0, "adam": 0.05}  # adam: on the 0..1 pixel scale


@dataclass(frozen=True)
class StyleSource:
    """One style image, (H, W, 3) uint8, and its blend weight (> 0; weights are normalised to sum 1)."""

    image: Pixels
    weight: float = 1.0


@dataclass(frozen=True)
class Losses:
    """Unweighted terms and the weighted total J = α·content + β·style + tv_weight·tv."""

    total: float
    content: float
    style: float
    tv: float


@dataclass(frozen=True)
class Progress:
    step: int  # 1-based, over all scales
    total: int
    scale: int  # 1-based, coarse to fine
    scales: int
    losses: Losses
    preview: Pixels | None  # the current image (H, W, 3) uint8 when a preview was due, else None


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class GatysOptions:
    size: int = 256  # long side of the output in pixels (aspect of the content kept)
    steps: int = 200  # optimiser steps over all scales (one L-BFGS step = one function evaluation)
    content_weight: float = 1.0  # α
    style_weight: float = 10.0  # β
    tv_weight: float = 0.0
    layer_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LAYER_WEIGHTS))  # λ
    content_layer: str = CONTENT_LAYER
    init: Init = "content"
    noise_ratio: float = 0.5  # noisy-content: (1 − r)·content + r·uniform noise
    optimizer: Optimizer = "lbfgs"
    learning_rate: float | None = None  # None = DEFAULT_LR[optimizer]
    scales: int = 0  # coarse-to-fine levels; 0 = automatic (one per doubling above 256 px)
    seed: int = 0
    preserve_color: bool = False
    preview_every: int = 0  # 0 = no previews


@dataclass(frozen=True)
class GatysResult:
    image: Pixels  # (H, W, 3) uint8
    losses: Losses  # at the last evaluation
    first_losses: Losses  # at the first evaluation (the initial image, coarsest scale)
    steps: int


# ---------------------------------------------------------------------------------------- loss terms
def gram(features: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) activations -> (C, C) Gram matrix A·Aᵀ / (H·W)."""
    _, c, h, w = features.shape
    a = features.reshape(c, h * w)
    return (a @ a.T) / (h * w)


def style_layer_loss(g_generated: torch.Tensor, g_style: torch.Tensor) -> torch.Tensor:
    """Σ (Ĝ^S − Ĝ^G)² / (4·nC²) = the lectures' 1/(2·nH·nW·nC)² · Σ (G^S − G^G)² for equal sizes."""
    c = g_generated.shape[0]
    return (g_generated - g_style).pow(2).sum() / (4.0 * c * c)


def content_loss(a_generated: torch.Tensor, a_content: torch.Tensor) -> torch.Tensor:
    """1/(4·nH·nW·nC) · Σ (a_C − a_G)² for (1, C, H, W) activations."""
    return (a_generated - a_content).pow(2).sum() / (4.0 * a_content.numel())


def tv_loss(x01: torch.Tensor) -> torch.Tensor:
    """Total variation of a (1, 3, H, W) 0..1 image on the 0..255 scale (mean squared neighbour difference)."""
    dx = x01[..., :, 1:] - x01[..., :, :-1]
    dy = x01[..., 1:, :] - x01[..., :-1, :]
    return (dx.pow(2).mean() + dy.pow(2).mean()) * (255.0**2)


def style_loss(features: VggFeatures, targets: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_l λ_l · J_style^l over the layers with a target."""
    total = features[0].new_zeros(())
    for name, target in targets.items():
        total = total + weights[name] * style_layer_loss(gram(getattr(features, name)), target)
    return total


def style_targets(
    vgg: VGG19Features,
    styles: Sequence[StyleSource],
    long_side: int,
    layers: Sequence[str],
    yield_point: YieldPoint = no_yield,
) -> dict[str, torch.Tensor]:
    """Blended (C, C) Gram targets: each style image scaled to `long_side` (own aspect), weights normalised."""
    device = next(vgg.parameters()).device
    total_weight = sum(s.weight for s in styles)
    blended: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for source in styles:
            h, w = fit_long_side(*source.image.shape[:2], long_side)
            feats = vgg(preprocess(to_tensor(resize(source.image, h, w), device)), yield_point)
            for name in layers:
                g = gram(getattr(feats, name)) * (source.weight / total_weight)
                blended[name] = blended[name] + g if name in blended else g
    return blended


# ---------------------------------------------------------------------------------------- validation
def validate(options: GatysOptions, styles: Sequence[StyleSource]) -> None:
    """Raise InvalidRequest naming the first bad option."""
    if not styles:
        raise InvalidRequest("at least one style image is needed")
    if any(not math.isfinite(s.weight) or s.weight < 0 for s in styles) or sum(s.weight for s in styles) <= 0:
        raise InvalidRequest("style blend weights must be finite, >= 0, and not all 0")
    if options.steps < 1:
        raise InvalidRequest(f"steps must be >= 1, got {options.steps}")
    if options.size < MIN_SIDE:
        raise InvalidRequest(f"size must be >= {MIN_SIDE} px (VGG-19 needs it to reach relu5_1), got {options.size}")
    for name, value in (
        ("content_weight", options.content_weight),
        ("style_weight", options.style_weight),
        ("tv_weight", options.tv_weight),
    ):
        if not math.isfinite(value) or value < 0:
            raise InvalidRequest(f"{name} must be finite and >= 0, got {value}")
    unknown = sorted(set(options.layer_weights) - set(LAYER_CHANNELS))
    if unknown:
        raise InvalidRequest(f"unknown style layers {unknown}; known: {sorted(LAYER_CHANNELS)}")
    if any(not math.isfinite(v) or v < 0 for v in options.layer_weights.values()):
        raise InvalidRequest("style layer weights must be finite and >= 0")
    if not any(v > 0 for v in options.layer_weights.values()):
        raise InvalidRequest("at least one style layer weight must be > 0")
    if options.content_layer not in LAYER_CHANNELS:
        raise InvalidRequest(f"unknown content layer {options.content_layer!r}; known: {sorted(LAYER_CHANNELS)}")
    if options.init not in INITS:
        raise InvalidRequest(f"init must be one of {INITS}, got {options.init!r}")
    if options.optimizer not in OPTIMIZERS:
        raise InvalidRequest(f"optimizer must be one of {OPTIMIZERS}, got {options.optimizer!r}")
    if options.learning_rate is not None and not (math.isfinite(options.learning_rate) and options.learning_rate > 0):
        raise InvalidRequest(f"learning_rate must be > 0, got {options.learning_rate}")
    if not 0.0 <= options.noise_ratio <= 1.0:
        raise InvalidRequest(f"noise_ratio must be in [0, 1], got {options.noise_ratio}")
    if options.scales < 0 or options.scales > 6:
        raise InvalidRequest(f"scales must be in 0..6 (0 = automatic), got {options.scales}")
    if options.preview_every < 0:
        raise InvalidRequest(f"preview_every must be >= 0, got {options.preview_every}")


def scale_plan(height: int, width: int, steps: int, scales: int = 0) -> list[tuple[int, int, int]]:
    """[(h, w, steps), ...] coarse to fine; the last entry is (height, width, ...); steps sum to `steps`.

    Automatic: one extra scale per doubling of the long side above 256 px. A scale whose long side would fall
    below MIN_SCALE_SIDE, or that would get no step, is dropped.
    """
    long_side = max(height, width)
    if scales == 0:
        scales = 1 + max(0, int(math.floor(math.log2(long_side / 256)))) if long_side > 256 else 1
    levels: list[tuple[int, int]] = []
    for k in range(scales - 1, -1, -1):
        side = round(long_side / 2**k)
        if k and side < MIN_SCALE_SIDE:
            continue
        levels.append((height, width) if k == 0 else fit_long_side(height, width, side))
    levels = levels[-steps:]  # never more scales than steps
    base, extra = divmod(steps, len(levels))
    # Coarse scales first; the finest gets the remainder.
    return [(h, w, base + (extra if i == len(levels) - 1 else 0)) for i, (h, w) in enumerate(levels)]


# -------------------------------------------------------------------------------------- optimisation
def _initial_image(content: torch.Tensor, options: GatysOptions, generator: torch.Generator) -> torch.Tensor:
    # Noise is drawn on the CPU from the seeded generator, so a seed gives the same start on any device.
    if options.init == "content":
        return content.clone()
    noise = torch.rand(content.shape, generator=generator, dtype=content.dtype).to(content.device)
    if options.init == "noise":
        return noise
    return (1.0 - options.noise_ratio) * content + options.noise_ratio * noise


def _make_optimizer(x: torch.Tensor, options: GatysOptions) -> torch.optim.Optimizer:
    lr = options.learning_rate or DEFAULT_LR[options.optimizer]
    if options.optimizer == "adam":
        return torch.optim.Adam([x], lr=lr)
    # max_iter=1: one .step() = one function evaluation, so progress and cancellation act per evaluation;
    # the curvature history survives between calls in the optimiser's state.
    return torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=LBFGS_HISTORY)


def stylize(
    content: Pixels,
    styles: Sequence[StyleSource],
    options: GatysOptions,
    *,
    vgg: VGG19Features,
    on_progress: ProgressCallback | None = None,
    yield_point: YieldPoint = no_yield,
    should_stop: ShouldStop = never_stop,
) -> GatysResult:
    """Stylise `content` (H, W, 3) uint8 with the blended `styles`; returns the image at options.size.

    Deterministic for a given options.seed on a given device and thread count. `yield_point` is called between
    VGG layers of every forward and backward pass; `should_stop` is checked at every step and every layer
    (raises control.Cancelled).
    """
    validate(options, styles)
    device = next(vgg.parameters()).device
    point = checked(yield_point, should_stop)
    weights = {name: w for name, w in options.layer_weights.items() if w > 0}
    height, width = fit_long_side(*content.shape[:2], options.size)
    plan = scale_plan(height, width, options.steps, options.scales)
    generator = torch.Generator().manual_seed(options.seed)

    x: torch.Tensor | None = None
    first: Losses | None = None
    last: Losses | None = None
    step = 0
    for level, (h, w, level_steps) in enumerate(plan, start=1):
        c = to_tensor(resize(content, h, w), device)
        with torch.no_grad():
            content_target = getattr(vgg(preprocess(c), point), options.content_layer).detach()
        grams = style_targets(vgg, styles, max(h, w), list(weights), point)
        start = _initial_image(c, options, generator) if x is None else F.interpolate(
            x.detach(), size=(h, w), mode="bilinear", align_corners=False
        )
        x = start.clamp(0, 1).requires_grad_(True)
        optimizer = _make_optimizer(x, options)
        evaluated: list[Losses] = []

        def closure() -> torch.Tensor:
            assert x is not None
            with torch.no_grad():
                x.clamp_(0, 1)  # keep the image a valid picture; the optimiser works on raw pixels
            optimizer.zero_grad(set_to_none=True)
            feats = vgg(preprocess(x), point)
            j_content = content_loss(getattr(feats, options.content_layer), content_target)
            j_style = style_loss(feats, grams, weights)
            j_tv = tv_loss(x) if options.tv_weight > 0 else x.new_zeros(())
            total = options.content_weight * j_content + options.style_weight * j_style + options.tv_weight * j_tv
            total.backward()
            evaluated.append(Losses(*(float(t.detach()) for t in (total, j_content, j_style, j_tv))))
            return total

        for _ in range(level_steps):
            if should_stop():
                raise Cancelled("style job cancelled")
            optimizer.step(closure)
            step += 1
            last = evaluated[-1]
            first = first or evaluated[0]
            if on_progress is not None:
                due = options.preview_every > 0 and (step % options.preview_every == 0 or step == options.steps)
                preview = to_pixels(x.detach().clamp(0, 1)) if due else None
                on_progress(Progress(step, options.steps, level, len(plan), last, preview))

    assert x is not None and last is not None and first is not None
    image = to_pixels(x.detach().clamp(0, 1))
    if options.preserve_color:
        image = _preserve_color(image, content)
    return GatysResult(image=image, losses=last, first_losses=first, steps=step)
