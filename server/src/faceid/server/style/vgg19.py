"""VGG-19 convolutional features for Gatys style transfer (Simonyan & Zisserman 2014).

The weights are the VGG team's original Caffe ImageNet weights (models/vgg19, see its README and card.json),
NOT torchvision's retrained ones, so the preprocessing is Caffe's: RGB on 0..255 minus the per-channel mean,
no division by a std. Getting this wrong does not fail: the activations come out ~35x too small, the style
term ~1,200x too weak, and the photo comes back unchanged. So `preprocess` is the only way in.

The forward pass is an explicit loop over the layers so that background work can give the accelerator away
between layers (`yield_point`), in the forward and, through tensor hooks, in the backward pass.
"""

from __future__ import annotations

import hashlib
import threading
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from faceid.indexer.errors import ChecksumMismatch, ModelMissing
from faceid.server.style.control import YieldPoint, no_yield

# Layer names and their index in torchvision's `vgg19().features` (card.json "layer_index").
LAYER_INDEX: dict[str, int] = {
    "relu1_1": 1,
    "relu2_1": 6,
    "relu3_1": 11,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu5_1": 29,
}
LAYER_CHANNELS: dict[str, int] = {
    "relu1_1": 64,
    "relu2_1": 128,
    "relu3_1": 256,
    "relu4_1": 512,
    "relu4_2": 512,
    "relu5_1": 512,
}
VggFeatures = namedtuple("VggFeatures", list(LAYER_INDEX))  # type: ignore[misc]

MEAN_RGB: tuple[float, float, float] = (123.68, 116.779, 103.939)

# sha256 of the files in models/vgg19 (card.json "files"); a file with another hash is never loaded.
WEIGHT_FILES: dict[str, str] = {
    "model-00001-of-00002.safetensors": "45261b3ef58648e3e7390d1788a380394caafba0a17631e3c1e58c0192e1710d",
    "model-00002-of-00002.safetensors": "7177c4e35de5352c06ebbe1f6fe0a840c559c11f27963b7c98a0b13e7a9e0c2b",
}

# VGG-19 configuration "E": channels of each 3x3 conv, "M" = 2x2 max-pool.
_CFG_E: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip

def preprocess(rgb01: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in 0..1 -> the network's input: RGB x 255 minus the Caffe mean, no std."""
    mean = torch.tensor(MEAN_RGB, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
    return rgb01 * 255.0 - mean


def deprocess(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `preprocess`, clamped to 0..1."""
    mean = torch.tensor(MEAN_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x + mean) / 255.0).clamp(0, 1)


def _make_features() -> nn.Sequential:
    """torchvision's vgg19().features layout (same state-dict keys), without building the classifier."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _CFG_E:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(in_ch, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = item
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """VGG-19 up to relu5_1; `forward` returns the Gatys layers as a `VggFeatures` namedtuple.

    ReLUs are not in-place: a selected activation must survive the next layer, and in-place ops would
    invalidate the tensor hooks that give the accelerator away during the backward pass.
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.layers = nn.Sequential(*list(features)[: max(LAYER_INDEX.values()) + 1])
        self._names = {i: name for name, i in LAYER_INDEX.items()}

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        yield_point: YieldPoint = no_yield,
        backward_yield: bool = True,
    ) -> VggFeatures:
        """x: (N, 3, H, W) preprocessed (see `preprocess`), H and W >= 32.

        Calls `yield_point` after every layer; when x requires grad and `backward_yield` is set, also after
        the gradient of every conv output has been computed in the backward pass.
        """
        out: dict[str, torch.Tensor] = {}
        hook_backward = backward_yield and x.requires_grad and yield_point is not no_yield
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if hook_backward and isinstance(layer, nn.Conv2d):
                x.register_hook(_yield_hook(yield_point))
            name = self._names.get(i)
            if name is not None:
                out[name] = x
            yield_point()
        return VggFeatures(**out)


def _yield_hook(yield_point: YieldPoint) -> Callable[[torch.Tensor], None]:
    def hook(grad: torch.Tensor) -> None:
        yield_point()

    return hook


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_files(model_dir: Path) -> None:
    """Raise ModelMissing naming the first absent weights file (cheap: no hashing)."""
    for name in WEIGHT_FILES:
        if not (model_dir / name).is_file():
            raise ModelMissing(
                f"VGG-19 weights file {model_dir / name} is missing; copy the models/vgg19 folder "
                "(see its README) into the model directory (FACEID_MODEL_DIR)"
            )


_loaded: dict[tuple[str, str], VGG19Features] = {}
_load_lock = threading.Lock()


def load_vgg19(path: Path, device: torch.device | str = "cpu") -> VGG19Features:
    """Load models/vgg19 (the folder) after checking each shard's sha256; eval mode, frozen.

    Cached per (folder, device): the hash check and load happen once per process.
    Raises ModelMissing (a file is absent) or ChecksumMismatch (a file differs from the card).
    """
    from safetensors.torch import load_file

    path = Path(path)
    key = (str(path.resolve()), str(device))
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        check_files(path)
        state: dict[str, torch.Tensor] = {}
        for name, expected in WEIGHT_FILES.items():
            actual = _sha256(path / name)
            if actual != expected:
                raise ChecksumMismatch(
                    f"{path / name} has sha256 {actual}, expected {expected} (models/vgg19/card.json); "
                    "the file is corrupt or not the Caffe VGG-19 conversion: copy it again"
                )
            state.update(load_file(path / name))
        features = _make_features()
        features.load_state_dict(state, strict=True)
        model = VGG19Features(features).to(device).eval().requires_grad_(False)
        _loaded[key] = model
        return model
