"""decode_image: real photos in, RGB out; bad bytes, bombs and rotated phone photos handled at the edge."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import FACES_DIR
from faceid.indexer.errors import ImageTooLarge, InvalidImage
from faceid.indexer.images import ImageLimits, decode_image

PHOTO = FACES_DIR / "barack_obama" / "01.jpg"  # 820×1024 JPEG


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height RGB pixels, followed by almost no pixel data (a bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_jpeg_decodes_to_rgb_with_hash_and_size() -> None:
    data = PHOTO.read_bytes()
    d = decode_image(data)
    assert d.image.mode == "RGB"
    assert (d.width, d.height) == d.image.size == (820, 1024)
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.format == "JPEG" and d.num_bytes == len(data)
    np.testing.assert_array_equal(np.asarray(d.image), np.asarray(Image.open(PHOTO).convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_decode_to_the_same_pixels(fmt: str) -> None:
    original = Image.open(PHOTO).convert("RGB").resize((205, 256))
    d = decode_image(_encode(original, fmt, lossless=True) if fmt == "WEBP" else _encode(original, fmt))
    assert d.format == fmt and d.image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(d.image), np.asarray(original))


def test_transparent_png_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (64, 64), (10, 20, 30, 0))  # fully transparent, junk colour underneath
    rgba.paste((200, 0, 0, 255), (0, 0, 32, 64))  # opaque red left half
    px = np.asarray(decode_image(_encode(rgba, "PNG")).image)
    assert px.shape == (64, 64, 3)
    assert tuple(px[10, 5]) == (200, 0, 0) and tuple(px[10, 50]) == (255, 255, 255)


def test_greyscale_becomes_three_channels() -> None:
    grey = Image.open(PHOTO).convert("L").resize((100, 120))
    d = decode_image(_encode(grey, "PNG"))
    assert d.image.mode == "RGB"
    px = np.asarray(d.image)
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_exif_orientation_is_applied() -> None:
    upright = Image.open(PHOTO).convert("RGB")
    # Orientation 6 = "rotate 90° clockwise to display": a phone stores the upright photo turned 90° counter-clockwise.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    d = decode_image(_encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert d.image.size == upright.size == (820, 1024)
    diff = np.abs(np.asarray(d.image, np.int16) - np.asarray(upright, np.int16))
    assert diff.mean() < 3.0  # only JPEG re-encoding noise; a wrong rotation would differ by tens


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"")


def test_bytes_that_are_not_an_image() -> None:
    with pytest.raises(InvalidImage, match="not an image"):
        decode_image(b"hello, this is a text file and not a photo\n" * 20)


def test_truncated_jpeg() -> None:
    data = PHOTO.read_bytes()
    with pytest.raises(InvalidImage, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_unsupported_format_is_named() -> None:
    gif = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "GIF")
    with pytest.raises(InvalidImage, match="GIF images are not accepted; send a JPEG, PNG, WEBP file"):
        decode_image(gif)


def test_too_many_bytes() -> None:
    data = PHOTO.read_bytes()
    with pytest.raises(ImageTooLarge, match="MiB"):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert decode_image(data, ImageLimits(max_bytes=len(data))).width == 820


def test_bomb_header_is_refused_before_decoding() -> None:
    # 48 MP declared, a few bytes of pixels: decoding would fail as truncated, so ImageTooLarge proves the
    # pixel count was checked from the header first.
    with pytest.raises(ImageTooLarge, match="megapixels"):
        decode_image(_png_header(8000, 6000))
    # The same bytes under a higher limit reach the decoder, which finds them truncated.
    with pytest.raises(InvalidImage):
        decode_image(_png_header(8000, 6000), ImageLimits(max_pixels=50_000_000))


def test_pil_own_bomb_error_becomes_image_too_large() -> None:
    # 10 gigapixels: PIL itself refuses this at open (over 2 × Image.MAX_IMAGE_PIXELS), before our check.
    with pytest.raises(ImageTooLarge):
        decode_image(_png_header(100_000, 100_000), ImageLimits(max_pixels=10**12))


def test_photo_smaller_than_a_face() -> None:
    tiny = _encode(Image.new("RGB", (12, 300)), "PNG")
    with pytest.raises(InvalidImage, match="at least 20 px"):
        decode_image(tiny)
