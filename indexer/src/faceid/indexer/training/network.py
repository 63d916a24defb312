"""Split InceptionResnetV1 into a frozen trunk and a trainable tail for fine-tuning.

- ``head``: the tail is last_linear + last_bn (+ L2 normalisation) on the 1792-d pooled features.
- ``last_block``: the tail also holds block8 (Block8_6 of the original graph), from the (1792, 3, 3) map.

The trunk's outputs can be computed once per crop (`trunk_features`) and cached, so an epoch costs only the tail:
on a CPU, a head epoch over a few hundred photos takes milliseconds instead of a minute of full forwards.
The tail modules are the model's own modules (shared, not copied): training the tail trains the model in place,
and `model.state_dict()` afterwards is the fine-tuned network, ready to save.

BatchNorm statistics stay frozen (eval mode) while training: P×K batches of a few dozen faces are too small and
too unrepresentative to re-estimate statistics learned on MS-Celeb-1M; BatchNorm's affine parameters still train.
Dropout stays off for the same determinism; regularisation comes from the held-out early stopping.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Trainable = Literal["head", "last_block"]


class Trunk(nn.Module):
    """InceptionResnetV1 up to the tail's input: (B, 3, 160, 160) standardised crops → (B, 1792) or (B, 1792, 3, 3)."""

    def __init__(self, model: nn.Module, trainable: Trainable) -> None:
        super().__init__()
        self.model = model
        self.trainable = trainable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                     "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3"):
            x = getattr(m, name)(x)
        if self.trainable == "last_block":
            return x
        x = m.block8(x)
        return m.avgpool_1a(x).flatten(1)


class Tail(nn.Module):
    """The trainable end of the network: trunk features → L2-normalised embedding (B, D)."""

    def __init__(self, model: nn.Module, trainable: Trainable) -> None:
        super().__init__()
        self.trainable = trainable
        self.block8 = model.block8 if trainable == "last_block" else None
        self.avgpool = model.avgpool_1a
        self.last_linear = model.last_linear
        self.last_bn = model.last_bn

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        if self.block8 is not None:
            x = self.avgpool(self.block8(x)).flatten(1)
        return F.normalize(self.last_bn(self.last_linear(x)), p=2, dim=1)

    def train(self, mode: bool = True) -> Tail:
        """Gradients flow in both modes; BatchNorm always uses its running statistics (see module docstring)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.eval()
        return self


def split_network(model: nn.Module, trainable: Trainable = "head") -> tuple[Trunk, Tail]:
    """Freeze every parameter outside the tail and return (trunk, tail) sharing the model's modules."""
    if trainable not in ("head", "last_block"):
        raise ValueError(f"trainable must be 'head' or 'last_block', got {trainable!r}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tail = Tail(model, trainable)
    for p in tail.parameters():
        p.requires_grad_(True)
    return Trunk(model, trainable).eval(), tail


@torch.no_grad()  # not inference_mode: the tail's backward must be allowed to save these tensors
def trunk_features(trunk: Trunk, crops: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Run the frozen trunk over standardised crops (N, 3, 160, 160) in batches; returns float32 on the CPU."""
    device = next(trunk.parameters()).device
    out = [trunk(crops[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(crops), batch_size)]
    return torch.cat(out) if out else torch.empty(0)
