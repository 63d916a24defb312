"""A judge for any stylised image: VGG-19 content loss to the content photo, Gram style loss to the painting.

The same terms as the optimisation (gatys.py, default layers and λ), measured the same way for every method,
so `optimize`, `fast` and the untouched photo are compared on one scale:

- content loss: J_content at relu4_2 between the output and the content photo resized to the output's size;
- style loss: Σ_l λ_l J_style^l between the output and the painting, scaled to the output's long side.

Reference points: the content photo itself has content loss 0 and some style loss S0; the painting, cropped to
the output's aspect, has some content loss C_style. Good stylisation lowers style loss far below S0 while
keeping content loss below C_style.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from faceid.server.style.gatys import (
    CONTENT_LAYER,
    DEFAULT_LAYER_WEIGHTS,
    StyleSource,
    content_loss,
    style_loss,
    style_targets,
)
from faceid.server.style.images import Pixels, crop_to_aspect, resize, to_tensor
from faceid.server.style.vgg19 import VGG19Features, preprocess


@dataclass(frozen=True)
class Scores:
    content_loss: float
    style_loss: float


class Judge:
    """Scores images against one (content, style) pair; the style targets are cached per output size."""

    def __init__(
        self,
        vgg: VGG19Features,
        *,
        layer_weights: Mapping[str, float] | None = None,
        content_layer: str = CONTENT_LAYER,
    ) -> None:
        self.vgg = vgg
        self.layer_weights = dict(layer_weights or DEFAULT_LAYER_WEIGHTS)
        self.content_layer = content_layer
        self.device = next(vgg.parameters()).device

    def score(self, output: Pixels, content: Pixels, style: Pixels) -> Scores:
        """output, content, style: (H, W, 3) uint8 (any sizes; content is resized to the output's)."""
        h, w = output.shape[:2]
        with torch.no_grad():
            out_feats = self.vgg(preprocess(to_tensor(output, self.device)))
            content_feats = self.vgg(preprocess(to_tensor(resize(content, h, w), self.device)))
            targets = style_targets(self.vgg, [StyleSource(style)], max(h, w), list(self.layer_weights))
            return Scores(
                content_loss=float(
                    content_loss(getattr(out_feats, self.content_layer), getattr(content_feats, self.content_layer))
                ),
                style_loss=float(style_loss(out_feats, targets, self.layer_weights)),
            )

    def references(self, content: Pixels, style: Pixels, height: int, width: int) -> tuple[Scores, Scores]:
        """(scores of the untouched content photo, scores of the painting cropped to the output's aspect)."""
        photo = resize(content, height, width)
        painting = resize(crop_to_aspect(style, height, width), height, width)
        return self.score(photo, content, style), self.score(painting, content, style)
