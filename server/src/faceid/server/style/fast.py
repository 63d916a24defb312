"""Feed-forward arbitrary style transfer (Ghiasi, Lee, Kudlur, Dumoulin, Shlens 2017, Magenta).

Two networks from models/style (see its README): a style predictor (MobileNetV2-based) maps a 256x256 style
image to a 100-d style vector; a transformer with conditional instance norm renders the content photo in that
style, in one forward pass. We run the `*_float32.onnx` files converted to torch by onnx2torch (the int8 files do
not convert), so they share the device, the thread pool and the scheduler's yield points with everything else.

- Any output size: the float32 transformer has symbolic H/W but needs multiples of 4, so the content is
  reflect-padded up to the next multiple of 4 and the result cropped back.
- Several styles blend by their weights in style-vector space (the network was trained to interpolate there).
- Strength a in [0, 1] interpolates towards the content's own style vector: v = a·v_style + (1 − a)·v_content
  (the README's recommendation; it looks better than a pixel fade).

Value ranges: both networks take NHWC RGB 0..1; the transformer returns NHWC RGB 0..1 (sigmoid).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from faceid.indexer.errors import ChecksumMismatch, InvalidRequest, ModelMissing
from faceid.server.style.color import preserve_color as _preserve_color
from faceid.server.style.control import ShouldStop, YieldPoint, checked, never_stop, no_yield
from faceid.server.style.gatys import StyleSource
from faceid.server.style.images import Pixels, crop_to_aspect, fit_long_side, resize, to_pixels, to_tensor

# sha256 of the float32 files in models/style (card.json); a file with another hash is never loaded.
PREDICT_FILE = "arbitrary_predict_float32.onnx"
TRANSFORM_FILE = "arbitrary_transform_float32.onnx"
WEIGHT_FILES: dict[str, str] = {
    PREDICT_FILE: "230f3878af34f68f45a3bda7410140d18481cff935da8a51140ecafafeacae9d",
    TRANSFORM_FILE: "f61535bfd91db4d1b963dd5525a57953750a330f1bb04834e92798f378a3cf7a",
}
STYLE_INPUT_SIDE = 256  # the predictor's fixed input
SIZE_MULTIPLE = 4  # the transformer's two stride-2 convolutions


@dataclass(frozen=True)
class FastOptions:
    size: int = 512  # long side of the output in pixels (aspect of the content kept)
    strength: float = 1.0  # 0 = the content's own style, 1 = the painting's
    preserve_color: bool = False


def check_files(model_dir: Path) -> None:
    """Raise ModelMissing naming the first absent weights file (cheap: no hashing)."""
    for name in WEIGHT_FILES:
        if not (model_dir / name).is_file():
            raise ModelMissing(
                f"fast style weights file {model_dir / name} is missing; copy the models/style folder "
                "(see its README) into the model directory (FACEID_MODEL_DIR)"
            )


def _load_onnx(path: Path, expected_sha256: str) -> nn.Module:
    import onnx
    from onnx2torch import convert

    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ChecksumMismatch(
            f"{path} has sha256 {actual}, expected {expected_sha256} (models/style/card.json); "
            "the file is corrupt or another model: copy it again"
        )
    return convert(onnx.load_from_string(data)).eval().requires_grad_(False)


class ArbitraryStyle:
    """The Magenta predictor + transformer pair on one device; thread-safe for concurrent `stylize` calls."""

    def __init__(self, predictor: nn.Module, transformer: nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.predictor = predictor.to(self.device)
        self.transformer = transformer.to(self.device)
        # Each call's yield point lives in a thread-local, so that hooks registered once serve every caller.
        self._local = threading.local()
        for module in (*self.predictor.modules(), *self.transformer.modules()):
            if isinstance(module, nn.Conv2d):
                module.register_forward_hook(self._after_layer)

    @classmethod
    def load(cls, model_dir: Path, device: torch.device | str = "cpu") -> ArbitraryStyle:
        """Load models/style's float32 pair after checking their sha256 (ModelMissing / ChecksumMismatch)."""
        model_dir = Path(model_dir)
        check_files(model_dir)
        return cls(
            _load_onnx(model_dir / PREDICT_FILE, WEIGHT_FILES[PREDICT_FILE]),
            _load_onnx(model_dir / TRANSFORM_FILE, WEIGHT_FILES[TRANSFORM_FILE]),
            device,
        )

    def _after_layer(self, module: nn.Module, args: object, output: object) -> None:
        point = getattr(self._local, "yield_point", None)
        if point is not None:
            point()

    def style_vector(self, image: Pixels) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 1, 1, 100) style vector of its centre square at 256x256."""
        square = crop_to_aspect(image, 1, 1)
        x = to_tensor(resize(square, STYLE_INPUT_SIDE, STYLE_INPUT_SIDE), self.device).permute(0, 2, 3, 1)
        with torch.inference_mode():
            return self.predictor(x.contiguous())

    def blended_vector(self, content: Pixels, styles: Sequence[StyleSource], strength: float) -> torch.Tensor:
        """Σ w_i·v_i (weights normalised), then a·v + (1 − a)·v_content; (1, 1, 1, 100)."""
        total = sum(s.weight for s in styles)
        v = sum(self.style_vector(s.image) * (s.weight / total) for s in styles)
        assert isinstance(v, torch.Tensor)
        if strength < 1.0:
            v = strength * v + (1.0 - strength) * self.style_vector(content)
        return v

    def render(self, content: Pixels, vector: torch.Tensor, height: int, width: int) -> Pixels:
        """The content resized to (height, width), stylised by `vector`; (height, width, 3) uint8."""
        x = to_tensor(resize(content, height, width), self.device)
        pad_h, pad_w = (-height) % SIZE_MULTIPLE, (-width) % SIZE_MULTIPLE
        if pad_h or pad_w:
            # Reflect (not zero) padding: the border the network sees continues the picture.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > max(pad_h, pad_w) else "replicate")
        with torch.inference_mode():
            y = self.transformer(x.permute(0, 2, 3, 1).contiguous(), vector)
        return to_pixels(y.permute(0, 3, 1, 2)[:, :, :height, :width])

    def stylize(
        self,
        content: Pixels,
        styles: Sequence[StyleSource],
        options: FastOptions,
        *,
        yield_point: YieldPoint = no_yield,
        should_stop: ShouldStop = never_stop,
    ) -> Pixels:
        """Stylise `content` (H, W, 3) uint8 with the blended `styles`; (h, w, 3) uint8 at options.size.

        `yield_point` runs after every convolution; `should_stop` is checked there too (raises Cancelled).
        """
        validate(options, styles)
        self._local.yield_point = checked(yield_point, should_stop)
        try:
            vector = self.blended_vector(content, styles, options.strength)
            height, width = fit_long_side(*content.shape[:2], options.size)
            image = self.render(content, vector, height, width)
        finally:
            self._local.yield_point = None
        if options.preserve_color:
            image = _preserve_color(image, content)
        return image


def validate(options: FastOptions, styles: Sequence[StyleSource]) -> None:
    """Raise InvalidRequest naming the first bad option."""
    if not styles:
        raise InvalidRequest("at least one style image is needed")
    if any(not math.isfinite(s.weight) or s.weight < 0 for s in styles) or sum(s.weight for s in styles) <= 0:
        raise InvalidRequest("style blend weights must be finite, >= 0, and not all 0")
    if not (math.isfinite(options.strength) and 0.0 <= options.strength <= 1.0):
        raise InvalidRequest(f"style strength must be in [0, 1], got {options.strength}")
    if options.size < 16:
        raise InvalidRequest(f"size must be >= 16 px, got {options.size}")
