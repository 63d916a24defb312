"""Bytes as uploaded → an RGB photo the detector can use, refusing what could hurt the server.

Order matters for safety: the byte count is checked before parsing, the pixel count is read from the
header (PIL's `Image.open` is lazy) and checked before a single pixel is decoded, so a decompression bomb
costs a header read, not gigabytes of memory. EXIF orientation is applied because phone photos arrive
rotated, and MTCNN misses faces lying on their side.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from faceid.indexer.errors import ImageTooLarge, InvalidImage

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded photo may be. Pixel counts are width × height of the stored (unrotated) image."""

    max_bytes: int = 20 * _MIB
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")  # PIL format names
    min_side: int = 20  # a photo narrower than the smallest face the detector looks for cannot hold one


@dataclass(frozen=True)
class DecodedImage:
    """One decoded photo: `image` is RGB with EXIF orientation applied; width/height are of that image."""

    image: Image.Image
    sha256: str  # hex digest of the bytes as uploaded (the idempotency key of enrolment)
    width: int
    height: int
    format: str  # "JPEG", "PNG" or "WEBP"
    num_bytes: int


def decode_image(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode uploaded bytes into an oriented RGB image.

    Raises `InvalidImage` for empty bytes, bytes that are not an image, an unsupported format, a truncated
    or corrupt file, or a side below `limits.min_side`; `ImageTooLarge` for more bytes or pixels than the
    limits allow (checked before decoding).
    """
    limits = limits or ImageLimits()
    if not data:
        raise InvalidImage("the image is empty (0 bytes); send the bytes of a JPEG, PNG or WebP file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data) / _MIB:.1f} MiB, more than the limit of {limits.max_bytes / _MIB:.1f} MiB; "
            "send a smaller file (re-encode it or reduce its resolution)"
        )
    digest = hashlib.sha256(data).hexdigest()
    allowed = ", ".join(limits.formats)
    try:
        # Lazy: reads the header only. PIL's own bomb check (2 × Image.MAX_IMAGE_PIXELS) can already fire here;
        # we do not raise PIL's process-wide limit, our lower limit below is the one that normally applies.
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image's header declares too many pixels ({exc}); send a smaller image") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"the bytes are not an image this server can read; send a {allowed} file") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the image header is corrupt ({exc}); send an intact {allowed} file") from exc

    if img.format not in limits.formats:
        raise InvalidImage(f"{img.format or 'this'} images are not accepted; send a {allowed} file")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}×{height} = {width * height / 1e6:.1f} megapixels, more than the limit of "
            f"{limits.max_pixels / 1e6:.1f}; downscale it before sending"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(
            f"the image is {width}×{height} px; each side must be at least {limits.min_side} px to hold a face"
        )
    try:
        img.load()  # the actual decode; truncated files fail here (ImageFile.LOAD_TRUNCATED_IMAGES stays False)
        oriented = ImageOps.exif_transpose(img)
        rgb = _to_rgb(oriented)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image decodes to too many pixels ({exc}); send a smaller image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(
            f"the {img.format} file is truncated or corrupt ({exc}); send the complete file again"
        ) from exc
    fmt = img.format
    return DecodedImage(image=rgb, sha256=digest, width=rgb.width, height=rgb.height, format=fmt, num_bytes=len(data))


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparent areas over white: a transparent PNG's hidden RGB values are often junk or black."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")
