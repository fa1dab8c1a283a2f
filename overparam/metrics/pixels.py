"""The one pixel convention of the package: images live in [-1, 1]; stored pixels in [0, 255].

* to pixels:    v = (x + 1) · 127.5            (:func:`to_pixel_scale`; rounded and clipped to the
                                                 8-bit levels 0..255 with ``quantize``)
* from pixels:  x = v / 127.5 − 1              (:func:`from_uint8`)
* saving:       :func:`to_uint8` = round((x + 1) · 127.5) clipped to 0..255, as uint8
* 8-bit round trip: :func:`quantize` = from_uint8(to_pixel_scale(x, quantize=True)), what a saved
  PNG reads back as.

Every loader, sampler, metric and study maps through these functions (numpy only, so any layer
may import this module). The 1-NN pixel distances of Yazici et al. (2020, Table 1) are taken on
the [0, 255] scale.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PIXEL_MAX", "from_uint8", "quantize", "to_pixel_scale", "to_uint8"]

PIXEL_MAX = 255
_HALF = PIXEL_MAX / 2.0  # 127.5


def to_pixel_scale(images, quantize: bool = False, dtype=np.float32) -> np.ndarray:
    """[-1, 1] → [0, 255]: v = (x + 1) · 127.5 in ``dtype``; ``quantize`` rounds to the nearest 8-bit
    level and clips to [0, 255] (as a saved PNG would)."""
    x = (np.asarray(images, dtype=dtype) + dtype(1.0)) * dtype(_HALF)
    return np.clip(np.rint(x), 0, PIXEL_MAX) if quantize else x


def from_uint8(values, dtype=np.float32) -> np.ndarray:
    """[0, 255] → [-1, 1]: x = v / 127.5 − 1 (uint8, integer or float pixel values) in ``dtype``."""
    return np.asarray(values, dtype=dtype) / dtype(_HALF) - dtype(1.0)


def to_uint8(images) -> np.ndarray:
    """[-1, 1] → uint8: round((x + 1) · 127.5) clipped to 0..255 (computed in float64; for saving)."""
    return to_pixel_scale(images, quantize=True, dtype=np.float64).astype(np.uint8)


def quantize(images) -> np.ndarray:
    """The 8-bit round trip of float32 images in [-1, 1]: from_uint8(round((x + 1) · 127.5))."""
    return from_uint8(to_pixel_scale(images, quantize=True))
