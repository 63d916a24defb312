"""Embedder with the real default model on crops cut by the service's own detector from shared/data/faces.

The accuracy check is the one that catches preprocessing mistakes (they never crash): the model card
measured data/faces as separable at tau = 1.02 with prewhiten and margin 20.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import pipeline_faces as pf
from face_crops import network
from faceid.indexer.embedding import Embedder, standardize

pytestmark = pytest.mark.slow  # MTCNN over the photos + ~100 InceptionResnetV1 forwards on CPU

TAU = 1.02  # the model card's threshold (plain L2 between unit vectors)


@functools.cache
def embedder() -> Embedder:
    return Embedder(network(), "prewhiten", device="cpu", batch_size=32)


@functools.cache
def pipeline_crops() -> tuple[tuple[str, ...], np.ndarray]:
    """(person of each crop, crops (79, 3, 160, 160) uint8): faces/ through FaceDetector at full resolution."""
    det = pf.detector(None)
    people, crops = [], []
    for photo in pf.face_photos():
        (face,) = pf.detections()[photo.name]
        people.append(photo.path.parent.name)
        crops.append(det.crop(photo.decoded.image, face))
    return tuple(people), np.stack(crops)


@functools.cache
def pipeline_embeddings() -> np.ndarray:
    return embedder().embed(pipeline_crops()[1])


def _readme_embedding(crop: np.ndarray) -> np.ndarray:
    """The model card's one-photo recipe, verbatim: prewhiten one crop, forward a batch of one."""
    x = torch.from_numpy(crop).float()
    x = (x - x.mean()) / x.std(correction=0).clamp(min=x.numel() ** -0.5)
    with torch.inference_mode():
        return network()(x[None])[0].numpy()


def test_faces_are_separable_at_the_cards_threshold() -> None:
    people, _ = pipeline_crops()
    emb = pipeline_embeddings()
    assert emb.shape == (79, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    d = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    labels = np.array(people)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    same_d, diff_d = d[same & upper], d[~same & upper]
    assert len(same_d) == 165 and len(diff_d) == 2916  # the card's pair counts
    # The card measured 0.982 (largest same) and 1.060 (smallest different) with this recipe.
    assert same_d.max() <= TAU < diff_d.min(), (float(same_d.max()), float(diff_d.min()))


def test_equals_the_model_cards_recipe_one_crop_at_a_time() -> None:
    _, crops = pipeline_crops()
    picks = [0, 17, 40, 78]
    got = pipeline_embeddings()[picks]
    expected = np.stack([_readme_embedding(crops[i]) for i in picks])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_batch_size_does_not_change_embeddings() -> None:
    _, crops = pipeline_crops()
    small = Embedder(network(), "prewhiten", batch_size=5).embed(crops[:12])
    np.testing.assert_allclose(small, pipeline_embeddings()[:12], atol=1e-5)


def test_fixed_standardisation_is_a_different_embedding() -> None:
    """The preprocessing argument is honoured: the card reports a median shift of 0.19 between the two."""
    _, crops = pipeline_crops()
    fixed = Embedder(network(), "fixed").embed(crops[:10])
    np.testing.assert_allclose(np.linalg.norm(fixed, axis=1), 1.0, atol=1e-5)
    shift = np.linalg.norm(fixed - pipeline_embeddings()[:10], axis=1)
    assert 0.05 < float(np.median(shift)) < 0.6


def test_downscaled_detection_keeps_faces_separable() -> None:
    """Issue 5's stretch goal: detect on a small copy, crop from the original; accuracy must not move.

    Measured: the embeddings move by a median ~0.16 from full-resolution detection, about what shifting the
    photo by one pixel does (~0.15: MTCNN's boxes jitter by a few pixels), against same-person distances
    of 0.3-0.98; a mapping error would move them by > 0.5 and break the separation.
    """
    det = pf.detector(None)
    small = pf.downscaled_detections()
    people, crops, shifted = [], [], []
    for k, photo in enumerate(pf.face_photos()):
        if photo.name in small:
            (face,) = small[photo.name]
            shifted.append(k)
        else:  # not larger than the copy size: the full-resolution path, nothing to compare
            (face,) = pf.detections()[photo.name]
        people.append(photo.path.parent.name)
        crops.append(det.crop(photo.decoded.image, face))
    assert len(shifted) >= 15
    emb = embedder().embed(np.stack(crops))
    shift = np.linalg.norm(emb[shifted] - pipeline_embeddings()[shifted], axis=1)
    assert float(np.median(shift)) <= 0.25, np.round(np.sort(shift), 3)
    d = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
    labels = np.array(people)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    assert d[same & upper].max() <= TAU < d[~same & upper].min()


def test_prewhiten_formula_and_flat_crop() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (3, 3, 16, 16)).astype(np.float32))
    x[2] = 77.0  # a flat crop: std 0, the 1/sqrt(N) floor keeps it finite
    y = standardize(x, "prewhiten")
    for k in range(3):
        xk = x[k].numpy().astype(np.float64)
        expected = (xk - xk.mean()) / max(xk.std(ddof=0), xk.size**-0.5)
        np.testing.assert_allclose(y[k].numpy(), expected, atol=1e-5)
    assert torch.isfinite(y).all() and float(y[2].abs().max()) == 0.0
    np.testing.assert_allclose(standardize(x, "fixed").numpy(), (x.numpy() - 127.5) / 128.0)


def test_empty_input_and_bad_arguments() -> None:
    e = embedder()
    assert e.dimension == 128
    empty = e.embed(np.zeros((0, 3, 160, 160), np.uint8))
    assert empty.shape == (0, 128) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="uint8"):
        e.embed(np.zeros((2, 3, 160, 160), np.float32))
    with pytest.raises(ValueError, match=r"\(n, 3, h, w\)"):
        e.embed(np.zeros((3, 160, 160), np.uint8))
    with pytest.raises(ValueError, match="known: prewhiten, fixed"):
        Embedder(network(), "imagenet")


def test_network_is_put_in_eval_mode() -> None:
    net = network()
    try:
        net.train()
        Embedder(net, "prewhiten")
        assert not net.training and not any(m.training for m in net.modules())
    finally:
        net.eval()
