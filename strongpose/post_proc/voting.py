"""Hough voting and keypoint candidates (docs/DECODER.md §2).

    strong, scores = hough_maps(heatmap, short, stride, disk_radius)   # peaks; a keypoint scores ~1
    cands = find_candidates(strong, scores, short, stride=stride, ...)  # ranked and capped
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .sampling import cell_points


def hough_maps(heatmap: np.ndarray, short: np.ndarray, stride: int,
               disk_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Strong keypoint maps and score maps (h, w, K), float32.

    Strong map: heat-weighted votes at ``p + S_k(p)``, splatted bilinearly, divided by
    ``pi (R/s)^2`` (the disk's area in cells), so an exact disk around a keypoint on a
    grid point gives a peak of about 1; off the grid the peak is split over at most 2x2
    cells. Votes beyond the map land nowhere. Score map: the 3x3 box sum of the votes,
    divided the same way, so a keypoint anywhere scores about 1. Both are divided after
    summing: on exact maps the votes are multiples of ``1/s^2``, summed exactly, so equal
    disks give exactly equal scores (ties stay ties, in raster order).
    """
    votes = _vote_sums(heatmap, short, stride, disk_radius).astype(np.float32)
    area = np.float32(math.pi * (disk_radius / stride) ** 2)
    return votes / area, box_sum(votes) / area


def hough_vote(heatmap: np.ndarray, short: np.ndarray, stride: int,
               disk_radius: float) -> np.ndarray:
    """The strong keypoint maps (h, w, K) of :func:`hough_maps`."""
    return hough_maps(heatmap, short, stride, disk_radius)[0]


def _vote_sums(heatmap: np.ndarray, short: np.ndarray, stride: int,
               disk_radius: float) -> np.ndarray:
    """Heat-weighted votes splatted bilinearly at ``p + S_k(p)``: (h, w, K) float64 sums."""
    heatmap = np.asarray(heatmap, np.float32)
    short = np.asarray(short, np.float32)
    if heatmap.ndim != 3 or short.shape != heatmap.shape[:2] + (2 * heatmap.shape[2],):
        raise ValueError(f"hough_vote: heatmap (h, w, K) and short (h, w, 2K) expected, got "
                         f"{heatmap.shape} and {short.shape}")
    if stride <= 0 or disk_radius <= 0:
        raise ValueError(f"hough_vote: stride and disk_radius must be > 0, got {stride}, {disk_radius}")
    h, w, k = heatmap.shape
    idx = np.flatnonzero(heatmap.reshape(-1) > 0)          # (cell, type) pairs that vote
    weight = heatmap.reshape(-1)[idx]
    dx, dy = short.reshape(-1).take(2 * idx), short.reshape(-1).take(2 * idx + 1)
    cell, kk = np.divmod(idx, k)
    ii, jj = np.divmod(cell, w)
    # Vote points in map cells, clamped to [-1, w] x [-1, h] (a vote beyond lands wholly
    # outside), splatted on a grid padded by 1 before and 2 after so no corner needs a check.
    inv = np.float32(1.0 / stride)
    tx = np.minimum(np.maximum(jj.astype(np.float32) + dx * inv, np.float32(-1)), np.float32(w))
    ty = np.minimum(np.maximum(ii.astype(np.float32) + dy * inv, np.float32(-1)), np.float32(h))
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = tx - x0, ty - y0
    row = (w + 3) * k
    t = (y0.astype(np.intp) + 1) * row + (x0.astype(np.intp) + 1) * k + kk
    target = np.concatenate([t, t + k, t + row, t + (row + k)])
    wts = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(weight, 4)
    out = np.bincount(target, wts, minlength=(h + 3) * row).reshape(h + 3, w + 3, k)
    return out[1:h + 1, 1:w + 1]


def box_sum(strong: np.ndarray) -> np.ndarray:
    """3x3 box sum over the two spatial axes (zeros outside)."""
    p = np.pad(strong, ((1, 1), (1, 1), (0, 0)))
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


@dataclass(frozen=True)
class Candidates:
    """Keypoint candidates, best first: positions (N, 2) in input pixels, types (N,),
    scores (N,)."""

    xy: np.ndarray
    types: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.types.size)

    def take(self, index: np.ndarray) -> "Candidates":
        return Candidates(self.xy[index], self.types[index], self.scores[index])


def find_candidates(strong: np.ndarray, score_map: np.ndarray, short: np.ndarray, *,
                    stride: int, threshold: float, max_per_type: int,
                    max_total: int) -> Candidates:
    """Local maxima of the strong maps at or above ``threshold``, refined by the short
    offset, best first (equal scores: the sharper peak, then raster order): the first
    ``max_per_type`` of each type, of
    those the first of each type and quarter pixel, and of those the first ``max_total``."""
    i, j, k = _local_maxima(strong, threshold)
    order = np.lexsort((-strong[i, j, k], -score_map[i, j, k]))     # ties: the sharper peak first
    i, j, k = i[order], j[order], k[order]
    h, w = strong.shape[:2]
    offsets = short.reshape(h, w, -1, 2)[i, j, k]
    cands = Candidates(xy=cell_points(h, w, stride)[i, j] + offsets, types=k,
                       scores=score_map[i, j, k])
    cands = cands.take(_cap(cands.types, max_per_type))
    return cands.take(_first_per_quarter_pixel(cands)[:max_total])


def _local_maxima(strong: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """Cells (i, j, k) with ``strong >= threshold``, ``> 0`` and equal to the maximum of
    their 3x3 neighbourhood of type k (zeros outside), in raster order. Only cells above
    the threshold are compared with their neighbours."""
    h, w, k = strong.shape
    i, j, t = np.nonzero((strong >= threshold) & (strong > 0))
    padded = np.pad(strong, ((1, 1), (1, 1), (0, 0)))
    flat = padded.reshape(-1)
    centre = ((i + 1) * (w + 2) + (j + 1)) * k + t
    value = flat[centre]
    is_max = np.ones(i.size, bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_max &= value >= flat[centre + (di * (w + 2) + dj) * k]
    return i[is_max], j[is_max], t[is_max]


def _first_per_quarter_pixel(cands: Candidates) -> np.ndarray:
    """Indices (in order) of the first candidate of each (type, position rounded to 1/4 px):
    tied peak cells of one keypoint refine to the same point."""
    q = np.round(cands.xy * 4)
    order = np.lexsort((q[:, 1], q[:, 0], cands.types))     # stable: best first within a tie
    key = np.stack([cands.types[order], q[order, 0], q[order, 1]], axis=1)
    first = np.ones(len(cands), bool)
    first[1:] = (key[1:] != key[:-1]).any(axis=1)
    return np.sort(order[first])


def _cap(types: np.ndarray, max_per_type: int) -> np.ndarray:
    """Indices (in order) of the first ``max_per_type`` entries of each type."""
    order = np.argsort(types, kind="stable")
    sorted_types = types[order]
    start = np.searchsorted(sorted_types, sorted_types, side="left")
    rank = np.empty(types.size, np.intp)
    rank[order] = np.arange(types.size) - start
    return np.flatnonzero(rank < max_per_type)
