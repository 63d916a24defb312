"""Aligned crops → unit-length embeddings, batched, with the standardisation the model card names.

The standardisation is part of the model, not a detail: the 2017 FaceNet models were trained on
prewhitened crops, and feeding them facenet-pytorch's fixed `(x − 127.5)/128` or `x/255` does not crash,
it silently moves distances (see the model card's pitfalls). So the embedder takes the card's name and
has no default.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

PREPROCESSINGS = ("prewhiten", "fixed")


def standardize(x: torch.Tensor, preprocessing: str) -> torch.Tensor:
    """Standardise float crops (n, 3, h, w) in 0..255.

    "prewhiten": per crop, y = (x − mean) / max(std, 1/√N), population std over all N = 3·h·w values
    (`tf.image.per_image_standardization`, Sandberg's `facenet.prewhiten`).
    "fixed": y = (x − 127.5) / 128 (what facenet-pytorch's MTCNN(post_process=True) returns).
    """
    if preprocessing == "prewhiten":
        flat = x.reshape(x.shape[0], -1)
        mean = flat.mean(dim=1)
        std = flat.std(dim=1, correction=0).clamp(min=flat.shape[1] ** -0.5)
        return (x - mean[:, None, None, None]) / std[:, None, None, None]
    if preprocessing == "fixed":
        return (x - 127.5) / 128.0
    raise ValueError(f"unknown preprocessing {preprocessing!r}; known: {', '.join(PREPROCESSINGS)}")


class Embedder:
    """Runs one embedding network on aligned crops.

    Arguments:
        network: the embedding network (e.g. facenet-pytorch's InceptionResnetV1 with the card's tail);
            it is moved to `device` and put in eval mode (training mode makes outputs depend on the batch).
        preprocessing: the model card's standardisation, "prewhiten" or "fixed".
        device: where the network runs.
        batch_size: crops per forward pass (bounds accelerator memory).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: str,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"unknown preprocessing {preprocessing!r}; known: {', '.join(PREPROCESSINGS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.dimension = _output_dimension(self.network, self.device)

    def embed(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Embeddings (n, d) float32, each of unit L2 length, of crops (n, 3, h, w) uint8 RGB in 0..255."""
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (n, 3, h, w) uint8, got {crops.shape} {crops.dtype}")
        out = np.empty((crops.shape[0], self.dimension), np.float32)
        cuda = self.device.type == "cuda"
        with torch.inference_mode():
            for start in range(0, crops.shape[0], self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(crops[start : start + self.batch_size]))
                if cuda:
                    # uint8 crosses the bus (4× less than float32); pinned memory lets the copy run async
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                x = standardize(chunk.float(), self.preprocessing)
                y = F.normalize(self.network(x).float(), p=2.0, dim=1)
                out[start : start + chunk.shape[0]] = y.cpu().numpy()
        return out


def _output_dimension(network: torch.nn.Module, device: torch.device) -> int:
    """The embedding size: InceptionResnetV1's `last_bn`, else one forward pass on a blank crop."""
    last_bn = getattr(network, "last_bn", None)
    if isinstance(last_bn, torch.nn.BatchNorm1d):
        return int(last_bn.num_features)
    with torch.inference_mode():
        return int(network(torch.zeros(1, 3, 160, 160, device=device)).shape[1])
