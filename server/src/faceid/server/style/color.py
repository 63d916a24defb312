"""Colour preservation by luminance transfer (Gatys, Bethge, Hertzmann, Shechtman 2016, "Preserving Color in
Neural Artistic Style Transfer", method 2 applied as a post-process).

The stylised image keeps its luminance Y (brush strokes, texture, shading); the chroma (I, Q of YIQ) is taken
from the content photo, so the colours stay those of the photo.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from faceid.server.style.images import Pixels, resize

# NTSC YIQ (FCC 1953 coefficients); rows give Y, I, Q from R, G, B in 0..1.
RGB_TO_YIQ: NDArray[np.float64] = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)
YIQ_TO_RGB: NDArray[np.float64] = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(image: Pixels) -> NDArray[np.float64]:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float64 YIQ (Y in 0..1)."""
    return (image.astype(np.float64) / 255.0) @ RGB_TO_YIQ.T


def yiq_to_rgb(yiq: NDArray[np.float64]) -> Pixels:
    """(H, W, 3) float64 YIQ -> (H, W, 3) uint8 RGB (clamped, rounded)."""
    rgb = yiq @ YIQ_TO_RGB.T
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preserve_color(stylized: Pixels, content: Pixels) -> Pixels:
    """Luminance of `stylized` + chroma of `content` (resized to the stylised size); (H, W, 3) uint8."""
    h, w = stylized.shape[:2]
    yiq = rgb_to_yiq(stylized)
    yiq[..., 1:] = rgb_to_yiq(resize(content, h, w))[..., 1:]
    return yiq_to_rgb(yiq)
