"""Reading maps at points: bilinear samples and short-offset snaps (docs/DECODER.md §1).

Every later step reads one image's maps at sub-cell points through :class:`Bilinear`
(corner cells and weights computed once, shared by every map read at the same points)
and moves points onto keypoints with :class:`Snapper`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sqnorm(d: np.ndarray) -> np.ndarray:
    """Squared length of (x, y) vectors over the last axis."""
    x, y = d[..., 0], d[..., 1]
    return x * x + y * y


def pair_channels(items: np.ndarray) -> np.ndarray:
    """Channels ``(2c, 2c+1)`` of the (dx, dy) pair of each item ``c``: shape (M, 2)."""
    return 2 * np.asarray(items, np.intp)[:, None] + np.arange(2)


def cell_points(h: int, w: int, stride: int) -> np.ndarray:
    """Input-image points ``(s*j, s*i)`` of an (h, w) map: (h, w, 2) float32."""
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32) * np.float32(stride)
    return np.stack([gx, gy], axis=-1)


class Bilinear:
    """Bilinear reads of (h, w, C) maps at points ``xy`` (M, 2) in input pixels.

    Points off the map read its border. The corner cells and weights are computed once
    and shared by every map read at the same points.
    """

    def __init__(self, xy: np.ndarray, shape: tuple[int, ...], stride: int) -> None:
        h, w = shape[:2]
        inv = np.float32(1.0 / stride)
        u = np.minimum(np.maximum(xy[:, 0] * inv, np.float32(0)), np.float32(w - 1))
        v = np.minimum(np.maximum(xy[:, 1] * inv, np.float32(0)), np.float32(h - 1))
        j0 = np.minimum(np.floor(u), np.float32(max(w - 2, 0)))
        i0 = np.minimum(np.floor(v), np.float32(max(h - 2, 0)))
        self.fx, self.fy = u - j0, v - i0
        self.cell = i0.astype(np.intp) * w + j0.astype(np.intp)
        self.step_x, self.step_y = (1 if w > 1 else 0), (w if h > 1 else 0)

    def __call__(self, arr: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """Channel ``channels[m]`` of ``arr`` at point m. ``channels`` is (M,) or (M, c);
        the result has its shape."""
        c_all = arr.shape[-1]
        channels = np.asarray(channels, np.intp)
        tail = (-1,) + (1,) * (channels.ndim - 1)
        i00 = (self.cell * c_all).reshape(tail) + channels
        sx, sy = self.step_x * c_all, self.step_y * c_all
        fx, fy = self.fx.reshape(tail), self.fy.reshape(tail)
        flat = arr.reshape(-1)
        v00, v01 = flat.take(i00), flat.take(i00 + sx)
        v10, v11 = flat.take(i00 + sy), flat.take(i00 + (sx + sy))
        top = v00 + (v01 - v00) * fx
        return top + (v10 + (v11 - v10) * fx - top) * fy

    def pairs(self, arr: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The (dx, dy) pair of item ``items[m]`` of a (h, w, 2C) offset map at point m: (M, 2)."""
        return self(arr, pair_channels(items))


@dataclass(frozen=True)
class Snapper:
    """Short-offset snaps: a point moves to the heat-weighted mean of the votes
    ``p + S_k(p)`` of the 4 cells around it, ``steps`` times, then is clamped into the
    input image. Cells outside a disk (no heat) drop out, so a point at a disk's edge
    still lands exactly on the keypoint; a point with no heat around it stays put.
    """

    field: np.ndarray       # (h, w, 3K): heat_k(p) * (p + S_k(p)) as x (K), y (K), then heat_k(p) (K)
    stride: int
    steps: int

    @classmethod
    def build(cls, heatmap: np.ndarray, short: np.ndarray, stride: int, steps: int) -> "Snapper":
        """The snap field of one image's heat map (h, w, K) and short offsets (h, w, 2K)."""
        h, w, _ = heatmap.shape
        cells = cell_points(h, w, stride)
        vote_x = (short[..., 0::2] + cells[..., :1]) * heatmap
        vote_y = (short[..., 1::2] + cells[..., 1:]) * heatmap
        return cls(field=np.concatenate([vote_x, vote_y, heatmap], axis=-1), stride=stride,
                   steps=steps)

    def __call__(self, xy: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Points xy (M, 2) of keypoint types (M,), snapped and clamped: (M, 2)."""
        k = self.field.shape[-1] // 3
        channels = np.asarray(types, np.intp)[:, None] + np.arange(0, 3 * k, k)
        for _ in range(self.steps):
            vote = Bilinear(xy, self.field.shape, self.stride)(self.field, channels)   # (M, 3)
            heat = vote[:, 2:]
            ok = heat > 1e-6
            xy = np.where(ok, vote[:, :2] / np.where(ok, heat, np.float32(1)), xy)
        h, w = self.field.shape[:2]
        hi = np.array([self.stride * (w - 1), self.stride * (h - 1)], np.float32)
        return np.minimum(np.maximum(xy, np.float32(0)), hi).astype(np.float32, copy=False)
