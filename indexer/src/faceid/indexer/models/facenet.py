"""facenet-pytorch's InceptionResnetV1 with the tail a `ModelSpec` asks for, and its weight loading.

Weights load beside the net that needs them: `load_embedding_network` builds the module, reads the
files the registry verified (safetensors shards or a facenet-pytorch `.pt` state dict) and loads them
strictly, so a missing or extra tensor is an error and never a silently random layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from faceid.indexer.errors import ModelMissing
from faceid.indexer.models.spec import ModelSpec

if TYPE_CHECKING:
    import torch

# facenet-pytorch's `.pt` files carry the classifier of their training identities (8631 / 10575
# classes); an embedding model has no use for it (facenet-pytorch keeps it only for classify=True).
_DROPPED_PREFIXES = ("logits.",)
_FEATURES = 1792  # pooled Inception-ResNet-v1 features feeding last_linear
_BN_EPS = 0.001  # the TF/Keras BatchNorm epsilon of every FaceNet release


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """An untrained InceptionResnetV1(classify=False) whose tail outputs `spec.dimension` values."""
    import torch.nn as nn
    from facenet_pytorch import InceptionResnetV1

    if spec.architecture != "inception-resnet-v1":
        raise ModelMissing(f"model {spec.name!r} has architecture {spec.architecture!r}, which this build cannot run")
    net = InceptionResnetV1(pretrained=None, classify=False)
    if spec.dimension != net.last_linear.out_features:
        net.last_linear = nn.Linear(_FEATURES, spec.dimension, bias=False)
        net.last_bn = nn.BatchNorm1d(spec.dimension, eps=_BN_EPS)
    return net


def read_state_dict(spec: ModelSpec, model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of `spec` from `model_dir` (CPU), classifier keys dropped; no checksum check here."""
    import torch
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    if spec.weights_format == "safetensors":
        index = json.loads((model_dir / "model.safetensors.index.json").read_text(encoding="utf-8"))
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(model_dir / shard))
        return state
    (weights,) = spec.weight_files
    # weights_only=True: a .pt file is a pickle, and only plain tensors may come out of it.
    loaded = torch.load(model_dir / weights.name, map_location="cpu", weights_only=True)
    return {k: v for k, v in loaded.items() if not k.startswith(_DROPPED_PREFIXES)}


def load_embedding_network(
    spec: ModelSpec, model_dir: Path, device: str | torch.device = "cpu", *, verify: bool = True
) -> torch.nn.Module:
    """The model in eval mode on `device`, weights loaded strictly; outputs (n, dimension) unit vectors.

    `verify` re-checks the files' sizes and sha256 first (memoised per process, so after
    `ensure_model` it costs nothing); it raises ChecksumMismatch instead of loading changed bytes.
    Input: (n, 3, image_size, image_size) float32 crops standardised as `spec.preprocessing` says.
    """
    from faceid.indexer.models.locations import verify_model_files

    if verify:
        verify_model_files(spec, Path(model_dir))
    net = build_network(spec)
    net.load_state_dict(read_state_dict(spec, Path(model_dir)), strict=True)
    net.eval()  # batch statistics and dropout p=0.6 would make embeddings depend on the batch
    net.requires_grad_(False)
    return net.to(device)
