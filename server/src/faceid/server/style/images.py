"""Image bytes <-> pixels for style transfer: decode once at the edge, with limits; resize; encode PNG.

Arrays are (H, W, 3) uint8 RGB unless a docstring says otherwise; tensors are (1, 3, H, W) float 0..1.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from faceid.indexer.errors import ImageTooLarge, InvalidImage

Pixels = NDArray[np.uint8]

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def decode(
    data: bytes,
    *,
    what: str = "image",
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Pixels:
    """Uploaded bytes (JPEG, PNG, WebP, ...) -> (H, W, 3) uint8 RGB, EXIF orientation applied.

    The pixel limit is checked from the header, before decoding (decompression bombs never expand).
    Raises InvalidImage (empty, not an image, truncated) or ImageTooLarge, naming `what`.
    """
    if not data:
        raise InvalidImage(f"{what} is empty: send the bytes of a JPEG, PNG or WebP file")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{what} has {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise ImageTooLarge(
                    f"{what} is {img.width}x{img.height} = {img.width * img.height} pixels; at most {max_pixels}"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"{what} could not be decoded ({exc}); send a JPEG, PNG or WebP file") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) scaled so that the longer side is `long_side` (aspect kept, each side >= 1)."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: Pixels, height: int, width: int) -> Pixels:
    """(H, W, 3) uint8 -> (height, width, 3) uint8, Lanczos (good down- and upscaling)."""
    if image.shape[:2] == (height, width):
        return image
    return np.array(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def crop_to_aspect(image: Pixels, height: int, width: int) -> Pixels:
    """Centre crop of `image` with the aspect ratio of (height, width)."""
    h, w = image.shape[:2]
    if h * width > w * height:  # too tall
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        return image[top : top + new_h]
    new_w = max(1, round(h * width / height))
    left = (w - new_w) // 2
    return image[:, left : left + new_w]


def to_tensor(image: Pixels, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 0..1."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255.0).contiguous()


def to_pixels(x: torch.Tensor) -> Pixels:
    """(1, 3, H, W) float 0..1 -> (H, W, 3) uint8 (rounded, clamped)."""
    y = x.detach()[0].clamp(0, 1).mul(255.0).add_(0.5).floor_().to(torch.uint8)
    return y.permute(1, 2, 0).cpu().numpy()


def encode_png(image: Pixels, *, long_side: int | None = None) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, optionally downscaled so the longer side is at most `long_side`."""
    if long_side is not None and max(image.shape[:2]) > long_side:
        image = resize(image, *fit_long_side(image.shape[0], image.shape[1], long_side))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
