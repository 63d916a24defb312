"""Style transfer engine (no gRPC): real VGG-19 and Magenta weights, real photos and paintings, small sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MODELS_DIR, STYLE_DIR

from faceid.indexer.errors import ChecksumMismatch, InvalidRequest, ModelMissing
from faceid.server.style import gatys
from faceid.server.style.color import rgb_to_yiq
from faceid.server.style.control import Cancelled, checked, no_yield
from faceid.server.style.fast import ArbitraryStyle, FastOptions
from faceid.server.style.gatys import GatysOptions, StyleSource
from faceid.server.style.images import decode, resize, to_tensor
from faceid.server.style.judge import Judge
from faceid.server.style.vgg19 import VGG19Features, load_vgg19, preprocess

CONTENT = STYLE_DIR / "content" / "astronaut.jpg"
PAINTING = STYLE_DIR / "paintings" / "the_starry_night.jpg"
OTHER_PAINTING = STYLE_DIR / "paintings" / "the_great_wave_off_kanagawa.jpg"


def _small(path: Path, side: int = 160) -> np.ndarray:
    image = decode(path.read_bytes())
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return resize(image, round(h * scale), round(w * scale))


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    return load_vgg19(MODELS_DIR / "vgg19")


@pytest.fixture(scope="module")
def content() -> np.ndarray:
    return _small(CONTENT)


@pytest.fixture(scope="module")
def painting() -> np.ndarray:
    return _small(PAINTING)


@pytest.fixture(scope="module")
def fast_model() -> ArbitraryStyle:
    return ArbitraryStyle.load(MODELS_DIR / "style")


# ------------------------------------------------------------------------------------------- VGG-19
def test_vgg_preprocessing_gives_the_cards_activation_scale(vgg: VGG19Features) -> None:
    # card.json: mean activations on the astronaut at 256x256 with the Caffe preprocessing. A wrong
    # preprocessing (torchvision mean/std, no x255) gives ~35x smaller values and silently ruins the style.
    photo = resize(decode(CONTENT.read_bytes()), 256, 256)
    with torch.no_grad():
        feats = vgg(preprocess(to_tensor(photo)))
    assert feats.relu1_1.mean().item() == pytest.approx(25.95, rel=0.05)
    assert feats.relu4_1.mean().item() == pytest.approx(668.2, rel=0.05)
    assert feats.relu4_2.shape == (1, 512, 32, 32)


def test_load_vgg19_refuses_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="model-00001-of-00002.safetensors"):
        load_vgg19(tmp_path)
    # One real shard, one corrupt copy of it: the hash check must catch the second.
    (tmp_path / "model-00001-of-00002.safetensors").symlink_to(MODELS_DIR / "vgg19" / "model-00001-of-00002.safetensors")
    shutil.copyfile(MODELS_DIR / "vgg19" / "model.safetensors.index.json", tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(ChecksumMismatch, match="model-00002-of-00002.safetensors"):
        load_vgg19(tmp_path)


# ------------------------------------------------------------------------------------------- Gatys
@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_losses_decrease(vgg: VGG19Features, content: np.ndarray, painting: np.ndarray, optimizer: str) -> None:
    seen: list[gatys.Progress] = []
    result = gatys.stylize(
        content,
        [StyleSource(painting)],
        GatysOptions(size=48, steps=6, optimizer=optimizer),  # type: ignore[arg-type]
        vgg=vgg,
        on_progress=seen.append,
    )
    assert [p.step for p in seen] == list(range(1, 7))
    assert result.image.shape == (48, 48, 3)
    # From the content image, the style term must fall a lot and the total must fall.
    assert result.first_losses.content == 0.0
    assert result.losses.style < 0.5 * result.first_losses.style
    assert result.losses.total < result.first_losses.total
    assert not np.array_equal(result.image, resize(content, 48, 48))


@pytest.mark.slow
def test_same_seed_same_image(vgg: VGG19Features, content: np.ndarray, painting: np.ndarray) -> None:
    def run(seed: int) -> np.ndarray:
        options = GatysOptions(size=40, steps=2, init="noisy-content", seed=seed, optimizer="adam")
        return gatys.stylize(content, [StyleSource(painting)], options, vgg=vgg).image

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1.0


@pytest.mark.slow
def test_preserve_color_keeps_the_contents_chroma(vgg: VGG19Features, content: np.ndarray, painting: np.ndarray) -> None:
    plain = gatys.stylize(content, [StyleSource(painting)], GatysOptions(size=48, steps=3), vgg=vgg).image
    kept = gatys.stylize(content, [StyleSource(painting)], GatysOptions(size=48, steps=3, preserve_color=True), vgg=vgg).image
    reference = rgb_to_yiq(resize(content, *kept.shape[:2]))
    chroma_error_kept = np.abs(rgb_to_yiq(kept)[..., 1:] - reference[..., 1:]).mean()
    chroma_error_plain = np.abs(rgb_to_yiq(plain)[..., 1:] - reference[..., 1:]).mean()
    assert chroma_error_kept < 0.01  # rounding to uint8 and clipping only
    assert chroma_error_plain > 3 * chroma_error_kept
    # The luminance is the stylised one, not the photo's.
    np.testing.assert_allclose(rgb_to_yiq(kept)[..., 0], rgb_to_yiq(plain)[..., 0], atol=0.02)


def test_blended_gram_target_is_the_weighted_mean(vgg: VGG19Features, content: np.ndarray, painting: np.ndarray) -> None:
    other = _small(OTHER_PAINTING, 96)
    layers = ["relu1_1", "relu3_1"]
    a = gatys.style_targets(vgg, [StyleSource(painting)], 64, layers)
    b = gatys.style_targets(vgg, [StyleSource(other)], 64, layers)
    blend = gatys.style_targets(vgg, [StyleSource(painting, 3.0), StyleSource(other, 1.0)], 64, layers)
    for name in layers:
        torch.testing.assert_close(blend[name], 0.75 * a[name] + 0.25 * b[name], rtol=1e-4, atol=1e-3)


def test_style_layer_loss_is_the_lectures_normalisation() -> None:
    # 1/(2·nH·nW·nC)² · Σ (G^S − G^G)² with unnormalised Grams G = A·Aᵀ, written out by hand.
    gen = torch.Generator().manual_seed(0)
    fa, fb = torch.rand(1, 8, 5, 6, generator=gen), torch.rand(1, 8, 5, 6, generator=gen)
    a, b = fa.reshape(8, 30), fb.reshape(8, 30)
    expected = ((a @ a.T - b @ b.T) ** 2).sum() / (2 * 5 * 6 * 8) ** 2
    assert gatys.style_layer_loss(gatys.gram(fa), gatys.gram(fb)).item() == pytest.approx(expected.item(), rel=1e-5)
    expected_content = ((fa - fb) ** 2).sum() / (4 * 5 * 6 * 8)
    assert gatys.content_loss(fa, fb).item() == pytest.approx(expected_content.item(), rel=1e-5)


def test_scale_plan_is_coarse_to_fine_and_spends_every_step() -> None:
    assert gatys.scale_plan(200, 256, 50) == [(200, 256, 50)]
    plan = gatys.scale_plan(384, 512, 101)
    assert [(h, w) for h, w, _ in plan] == [(192, 256), (384, 512)]
    assert sum(s for *_, s in plan) == 101
    assert [(h, w) for h, w, _ in gatys.scale_plan(768, 1024, 30, scales=3)] == [(192, 256), (384, 512), (768, 1024)]
    assert len(gatys.scale_plan(48, 64, 10, scales=3)) == 1  # never below MIN_SCALE_SIDE


def test_bad_options_are_invalid_requests(painting: np.ndarray) -> None:
    styles = [StyleSource(painting)]
    for options in (
        GatysOptions(steps=0),
        GatysOptions(style_weight=-1.0),
        GatysOptions(layer_weights={"relu9_9": 1.0}),
        GatysOptions(layer_weights={"relu1_1": 0.0}),
        GatysOptions(size=16),
    ):
        with pytest.raises(InvalidRequest):
            gatys.validate(options, styles)
    with pytest.raises(InvalidRequest):
        gatys.validate(GatysOptions(), [])


# ------------------------------------------------------------------------------ yielding and stopping
def test_yield_point_runs_between_layers_of_forward_and_backward(vgg: VGG19Features, content: np.ndarray) -> None:
    calls = 0

    def yield_point() -> None:
        nonlocal calls
        calls += 1

    x = to_tensor(resize(content, 48, 48)).requires_grad_(True)
    feats = vgg(preprocess(x), yield_point)
    assert calls == len(vgg.layers) == 30  # after every layer up to relu5_1
    calls = 0
    feats.relu5_1.sum().backward()
    assert calls == 13  # once per convolution up to relu5_1, as its gradient is computed

    # A stop request during the backward pass ends it there (the hook raises through autograd).
    stop = False
    feats = vgg(preprocess(x), checked(no_yield, lambda: stop))
    stop = True
    with pytest.raises(Cancelled):
        feats.relu5_1.sum().backward()


def test_should_stop_cancels_within_a_step(vgg: VGG19Features, content: np.ndarray, painting: np.ndarray) -> None:
    checks = 0

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return checks > 20  # in the middle of a VGG forward pass, not at a step boundary

    with pytest.raises(Cancelled):
        gatys.stylize(content, [StyleSource(painting)], GatysOptions(size=48, steps=50), vgg=vgg, should_stop=should_stop)
    assert checks == 21


# ---------------------------------------------------------------------------------------- fast + judge
def test_fast_serves_any_size_and_strength(fast_model: ArbitraryStyle, vgg: VGG19Features) -> None:
    content = _small(CONTENT, 300)[:, :297]  # odd aspect; outputs are not multiples of 4
    painting = _small(PAINTING, 256)
    calls = 0

    def yield_point() -> None:
        nonlocal calls
        calls += 1

    full = fast_model.stylize(content, [StyleSource(painting)], FastOptions(size=101), yield_point=yield_point)
    assert full.shape == (101, 100, 3)
    assert calls > 16  # every convolution of the predictor and the transformer
    none = fast_model.stylize(content, [StyleSource(painting)], FastOptions(size=101, strength=0.0))
    judge = Judge(vgg)
    s_full = judge.score(full, content, painting).style_loss
    s_none = judge.score(none, content, painting).style_loss
    assert s_full < 0.5 * s_none  # strength 0 renders the photo's own style
    with pytest.raises(Cancelled):
        fast_model.stylize(content, [StyleSource(painting)], FastOptions(size=64), should_stop=lambda: True)


def test_judge_orders_photo_and_painting(vgg: VGG19Features, content: np.ndarray, painting: np.ndarray) -> None:
    judge = Judge(vgg)
    photo, paint = judge.references(content, painting, 64, 64)
    assert photo.content_loss == 0.0
    assert paint.style_loss < 0.2 * photo.style_loss
    assert paint.content_loss > 0.0
