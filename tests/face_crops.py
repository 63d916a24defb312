"""Crops and embeddings of shared/data/faces for the accuracy tests, computed once per test process.

Straight facenet-pytorch, as the default model's card prescribes (MTCNN image_size 160, margin 20,
post_process=False, prewhiten), with the registry's weight loader, so these tests do not depend on the
service's pipeline. ~79 MTCNN runs + 79 forwards: about 15 s on 2 CPU cores.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conftest import FACES_DIR, MODELS_DIR
from faceid.indexer.evaluation import identity_folders

MODEL = "facenet-20170512-128d"


@dataclass(frozen=True)
class FaceCrops:
    paths: tuple[Path, ...]
    people: tuple[str, ...]  # person of each crop
    labels: np.ndarray  # (n,) int64, index into sorted people names
    crops: torch.Tensor  # (n, 3, 160, 160) float32, prewhitened
    embeddings: np.ndarray  # (n, 128) float32, default model


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """Per-crop standardisation of (n, 3, h, w) crops in 0..255 (the model card's formula)."""
    flat = x.flatten(1)
    mean = flat.mean(1).view(-1, 1, 1, 1)
    std = flat.std(1, correction=0).clamp(min=flat.shape[1] ** -0.5).view(-1, 1, 1, 1)
    return (x - mean) / std


@functools.cache
def network() -> torch.nn.Module:
    from faceid.indexer.models import get_model_spec, load_embedding_network

    return load_embedding_network(get_model_spec(MODEL), MODELS_DIR / MODEL, "cpu")


@functools.cache
def face_crops() -> FaceCrops:
    """Computed once per process. FACEID_TEST_CROPS_CACHE=/some/file.npz keeps them between runs while developing
    (opt-in; CI always recomputes from the photos)."""
    cache = os.environ.get("FACEID_TEST_CROPS_CACHE")
    folders = identity_folders(FACES_DIR)
    names = sorted(folders)
    if cache and Path(cache).is_file():
        z = np.load(cache)
        paths = tuple(Path(p) for p in z["paths"])
        people = tuple(p.parent.name for p in paths)
        return FaceCrops(paths, people, z["labels"], torch.from_numpy(z["crops"]), z["emb"])
    fc = _compute(folders, names)
    if cache:
        np.savez(cache, emb=fc.embeddings, labels=fc.labels, crops=fc.crops.numpy(),
                 paths=np.array([str(p) for p in fc.paths]))
    return fc


def _compute(folders: dict[str, list[Path]], names: list[str]) -> FaceCrops:
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(image_size=160, margin=20, post_process=False)
    paths, people, crops = [], [], []
    for person, files in folders.items():
        for f in files:
            crop = mtcnn(Image.open(f).convert("RGB"))
            assert crop is not None, f"MTCNN found no face in {f}"
            paths.append(f)
            people.append(person)
            crops.append(crop)
    x = prewhiten(torch.stack(crops).float())
    labels = np.array([names.index(p) for p in people], dtype=np.int64)
    with torch.inference_mode():
        emb = torch.cat([network()(x[i : i + 16]) for i in range(0, len(x), 16)]).numpy()
    return FaceCrops(tuple(paths), tuple(people), labels, x, emb.astype(np.float32))
