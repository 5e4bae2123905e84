"""Map geometry shared by every stage: sizes s*n + 1 and the original-image transform.

Map cell ``(i, j)`` is input-image point ``(x, y) = (s*j, s*i)`` (align-corners), so an
input of size ``s*n + 1`` gives a map of ``n + 1`` cells along that axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def map_size(input_size: int, stride: int) -> int:
    """Map cells along an axis of ``input_size = s*n + 1`` pixels."""
    if input_size < 1 or (input_size - 1) % stride:
        raise ValueError(f"input size {input_size} is not {stride}*n + 1")
    return (input_size - 1) // stride + 1


def input_size_for(map_cells: int, stride: int) -> int:
    """Input pixels along an axis for ``map_cells`` map cells: ``s*(n-1) + 1``."""
    return stride * (map_cells - 1) + 1


def padded_size(size: int, stride: int) -> int:
    """The smallest ``s*n + 1 >= size`` (size in pixels)."""
    return stride * max(1, math.ceil((size - 1) / stride)) + 1


@dataclass(frozen=True)
class ImageTransform:
    """How an original image became the network input: ``input = original * scale + offset``.

    Attributes:
        scale: resize factor applied to the original image.
        offset_x, offset_y: padding (input pixels) added on the left and top.
        original_width, original_height: size of the original image in pixels.
    """

    scale: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0
    original_width: int = 0
    original_height: int = 0

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Input-image points ``(..., 2)`` -> original-image points."""
        xy = np.asarray(xy, dtype=np.float32)
        return (xy - np.array([self.offset_x, self.offset_y], np.float32)) / np.float32(self.scale)

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Original-image points ``(..., 2)`` -> input-image points."""
        xy = np.asarray(xy, dtype=np.float32)
        return xy * np.float32(self.scale) + np.array([self.offset_x, self.offset_y], np.float32)
