"""Reading maps at points: bilinear samples and short-offset snaps (docs/DECODER.md §1).

Every later step reads one image's maps at sub-cell points through :class:`Bilinear`
(corner cells and weights computed once, shared by every map read at the same points)
and moves points onto keypoints with :class:`Snapper`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


def sqnorm(d: np.ndarray) -> np.ndarray:
    """Squared length of (x, y) vectors over the last axis."""
    x, y = d[..., 0], d[..., 1]
    return x * x + y * y


def cell_points(h: int, w: int, stride: int) -> np.ndarray:
    """Input-image points ``(s*j, s*i)`` of an (h, w) map: (h, w, 2) float32."""
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32) * np.float32(stride)
    return np.stack([gx, gy], axis=-1)


@functools.lru_cache(maxsize=8)
def _complex_cells(shape: tuple[int, int, int], stride: int) -> np.ndarray:
    """Cell points ``s*j + 1j*s*i`` as complex64, repeated over K channels: (h, w, K)."""
    h, w, k = shape
    cells = np.arange(w, dtype=np.float32)[None, :] * stride \
        + 1j * np.arange(h, dtype=np.float32)[:, None] * stride
    out = np.repeat(cells.astype(np.complex64)[..., None], k, axis=-1)
    out.flags.writeable = False
    return out


class Bilinear:
    """Bilinear reads of (h, w, C) maps at points ``xy`` (M, 2) in input pixels.

    Points off the map read its border. The corner cells and weights are computed once
    and shared by every map read at the same points.
    """

    def __init__(self, xy: np.ndarray, shape: tuple[int, ...], stride: int) -> None:
        h, w = shape[:2]
        top = np.array([w - 1, h - 1], np.float32)
        uv = np.minimum(np.maximum(xy * np.float32(1.0 / stride), np.float32(0)), top)
        corner = np.minimum(np.floor(uv), np.maximum(top - 1, np.float32(0)))   # (M, 2): j0, i0
        frac = uv - corner
        self.fx, self.fy = frac[:, 0], frac[:, 1]
        corner = corner.astype(np.intp)
        self.cell = corner[:, 1] * w + corner[:, 0]
        self.step_x, self.step_y = (1 if w > 1 else 0), (w if h > 1 else 0)

    def __call__(self, arr: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Channel ``channels[m]`` of ``arr`` at point m: (M,), ``arr``'s dtype (complex
        maps work too)."""
        c_all = arr.shape[-1]
        i00 = self.cell * c_all + np.asarray(channels, np.intp)
        sx, sy = self.step_x * c_all, self.step_y * c_all
        flat = arr.reshape(-1)
        v00, v01 = flat.take(i00), flat.take(i00 + sx)
        v10, v11 = flat.take(i00 + sy), flat.take(i00 + (sx + sy))
        top = v00 + (v01 - v00) * self.fx
        return top + (v10 + (v11 - v10) * self.fx - top) * self.fy

    def pairs(self, arr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The (dx, dy) pair of item ``items[m]`` of a (h, w, 2C) offset map at point m: (M, 2).

        The pair is read as one complex number (a view, no copy): half the reads.
        """
        pairs = np.ascontiguousarray(arr, np.float32).view(np.complex64)
        return self(pairs, items).view(np.float32).reshape(-1, 2)


@dataclass(frozen=True)
class Snapper:
    """Short-offset snaps: a point moves to the heat-weighted mean of the votes
    ``p + S_k(p)`` of the 4 cells around it, ``steps`` times, then is clamped into the
    input image. Cells outside a disk (no heat) drop out, so a point at a disk's edge
    still lands exactly on the keypoint; a point with no heat around it stays put.
    """

    votes: np.ndarray       # (h, w, K) complex64: heat_k(p) (p + S_k(p)), x + iy
    heat: np.ndarray        # (h, w, K)
    stride: int
    steps: int

    @classmethod
    def build(cls, heatmap: np.ndarray, short: np.ndarray, stride: int, steps: int) -> "Snapper":
        """The snap field of one image's heat map (h, w, K) and short offsets (h, w, 2K)."""
        # (x, y) pairs as complex numbers: whole-array passes, no broadcasting.
        points = np.ascontiguousarray(short).view(np.complex64) + _complex_cells(heatmap.shape, stride)
        return cls(votes=points * heatmap, heat=heatmap, stride=stride, steps=steps)

    def __call__(self, xy: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Points xy (M, 2) of keypoint types (M,), snapped and clamped: (M, 2)."""
        for _ in range(self.steps):
            at = Bilinear(xy, self.heat.shape, self.stride)
            heat, vote = at(self.heat, types), at(self.votes, types)
            ok = heat > 1e-6
            mean = (vote / np.where(ok, heat, np.float32(1))).view(np.float32).reshape(-1, 2)
            xy = np.where(ok[:, None], mean, xy)
        h, w = self.heat.shape[:2]
        hi = np.array([self.stride * (w - 1), self.stride * (h - 1)], np.float32)
        return np.minimum(np.maximum(xy, np.float32(0)), hi).astype(np.float32, copy=False)
