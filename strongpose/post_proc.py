"""Maps of one image -> people (NumPy/SciPy, vectorised): the PersonLab decoder.

    decoder = Decoder.from_config(cfg)
    people = decoder(maps, transform)        # maps: docs/MAPS.md keys, one image (h, w, C)

Steps (DESIGN.md "Decoding"):

1. Hough voting (:func:`hough_vote`): every cell votes for ``p + S_k(p)`` with weight
   ``heatmap_k(p)``, bilinearly splatted and divided by ``pi (R/s)^2``; an exact disk gives
   a peak of 1 (split over at most 2x2 cells when the keypoint is off the grid). Scores are
   read from the 3x3 box sum of that map, so a keypoint anywhere scores about 1.
2. Candidates: local maxima above ``peak_threshold``, refined by the short offset.
3. Walks (:func:`walk_candidates`), vectorised over candidates, one step per tree level:
   along directed edge (a, b), ``y_b = y_a + M_ab(y_a)``, then ``snap_steps`` short-offset
   snaps (each moves a point to the heat-weighted mean of ``p + S_b(p)`` over the 4 cells
   around it, exact even where those cells straddle the disk's edge); b is found if it scores ``>= peak_threshold`` on the score map and the walk back
   along (b, a) lands within ``nms_radius`` of y_a (else y_b is someone else's keypoint).
   Only found keypoints are walked from. Every candidate takes one step; candidates that
   reach each other are one person, and only the best of each such group walks on (the
   others would be dropped by its walk in step 4 anyway; any that is not gets walked then).
4. Greedy seeding (:func:`select_people`): candidates best first; one seeds a person
   unless a kept person has a found keypoint of its type within ``nms_radius``. Walks do
   not depend on other people, so this equals the sequential PersonLab decoder; the loop
   runs once per person. With ``use_long_range`` each kept person is completed: every
   found keypoint y votes for every other keypoint k at ``y + L_k(y)`` (snapped, scored,
   checked backwards with ``L`` at the voted point), the best-supported vote wins, and the
   walk resumes from keypoints found this way. This keeps a person whose chain is broken
   by an unlabelled / undetected keypoint in one piece; seeding is then redone.
5. Person score: soft keypoint-NMS (sum of keypoint scores not within ``nms_radius`` of the
   same keypoint of a better person, over K).
6. Instance masks from long-range embeddings; coordinates back to the original image.

Cost: bilinear samples share corner cells and weights per point set (:class:`_Sampler`)
and read (dx, dy) pairs as one complex64 value (:func:`_pairs`); long-range completion
runs for all kept people in one batch; masks come from one label image upsampled once,
each person's full-size mask filled only inside its box. 32 people take under 3x the
time of one (``benchmarks/decode_oracle.py --people 32``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Optional

import cv2
import numpy as np
from scipy import ndimage

from strongpose.config import DecoderConfig
from strongpose.geometry import ImageTransform
from strongpose.skeleton import Skeleton

if TYPE_CHECKING:  # pragma: no cover
    from strongpose.config import Config

MAP_KEYS: tuple[str, ...] = ("heatmap", "short", "mid", "long", "body")


@dataclass
class Person:
    """A decoded person, in original-image pixels."""

    keypoints: np.ndarray                       # (K, 3): x, y, score
    score: float                                # soft keypoint-NMS score
    box: tuple[float, float, float, float]      # x, y, w, h: box of mask and found keypoints
    mask: Optional[np.ndarray] = None           # bool (H_orig, W_orig) or None


# ------------------------------------------------------------------------ sampling
class _Sampler:
    """Bilinear sampling of (h, w, C) maps at input points ``xy`` (M, 2); the corner cells
    and weights are computed once and shared by every map sampled at the same points.
    Points outside the map are clamped to its border."""

    def __init__(self, xy: np.ndarray, shape: tuple[int, ...], stride: float) -> None:
        h, w = shape[:2]
        inv = np.float32(1.0 / stride)
        x = np.minimum(np.maximum(xy[:, 0] * inv, np.float32(0)), np.float32(w - 1))
        y = np.minimum(np.maximum(xy[:, 1] * inv, np.float32(0)), np.float32(h - 1))
        x0 = np.minimum(np.floor(x), np.float32(max(w - 2, 0)))
        y0 = np.minimum(np.floor(y), np.float32(max(h - 2, 0)))
        self.fx, self.fy = x - x0, y - y0
        self.cell = y0.astype(np.intp) * w + x0.astype(np.intp)
        self.steps = (1 if w > 1 else 0, w if h > 1 else 0)

    def __call__(self, arr: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """``arr`` (h, w, C) at the points; ``channels`` (M,) or (M, c): the channel(s) to
        read at each point. The result has ``channels``' shape and ``arr``'s dtype. ``arr``
        may be a complex view of (dx, dy) pairs (:func:`_pairs`): one complex sample is one
        pair, half the work of sampling dx and dy apart."""
        return self.many((arr,), channels)[0]

    def many(self, arrays: tuple[np.ndarray, ...], channels: np.ndarray) -> list[np.ndarray]:
        """Like ``__call__`` for several maps of one channel count, sharing the indices."""
        c_all = arrays[0].shape[-1]
        channels = np.asarray(channels, np.intp)
        tail = (-1,) + (1,) * (channels.ndim - 1)
        sx, sy = self.steps[0] * c_all, self.steps[1] * c_all
        i00 = (self.cell * c_all).reshape(tail) + channels
        i01, i10, i11 = i00 + sx, i00 + sy, i00 + (sx + sy)
        fx, fy = self.fx.reshape(tail), self.fy.reshape(tail)
        out = []
        for arr in arrays:
            flat = arr.reshape(-1)
            v00, v01, v10, v11 = flat.take(i00), flat.take(i01), flat.take(i10), flat.take(i11)
            top = v00 + (v01 - v00) * fx
            out.append(top + (v10 + (v11 - v10) * fx - top) * fy)
        return out


def _pairs(arr: np.ndarray) -> np.ndarray:
    """(h, w, 2C) float32 of (dx, dy) pairs -> (h, w, C) complex64 view (item c = pair c)."""
    return np.ascontiguousarray(arr, np.float32).view(np.complex64)


def _sample_pairs(pairs: np.ndarray, xy: np.ndarray, items: np.ndarray, stride: float,
                  sampler: Optional[_Sampler] = None) -> np.ndarray:
    """(dx, dy) of item ``items`` (M,) at points xy (M, 2), from a :func:`_pairs` view: (M, 2)."""
    sampler = sampler or _Sampler(xy, pairs.shape, stride)
    return sampler(pairs, items).view(np.float32).reshape(-1, 2)


def _sqnorm(d: np.ndarray) -> np.ndarray:
    """Squared length of (x, y) vectors over the last axis (plain products: for a last axis
    of 2 much faster than ``einsum`` or ``(d**2).sum(-1)``)."""
    x, y = d[..., 0], d[..., 1]
    return x * x + y * y


def _pair_channels(types: np.ndarray) -> np.ndarray:
    """Channels ``(2t, 2t+1)`` of (dx, dy) pairs, shape (M, 2)."""
    return 2 * types[:, None] + np.arange(2)


# ---------------------------------------------------------------------- hough maps
def hough_vote(heatmap: np.ndarray, short: np.ndarray, stride: int,
               disk_radius: float) -> np.ndarray:
    """Strong keypoint maps (h, w, K): heat-weighted votes at ``p + short``, bilinearly splatted.

    Normalised by ``pi (R/s)^2`` (the disk's area in map cells), so an exact disk around a
    keypoint on a grid point gives a peak of about 1.
    """
    heatmap = np.asarray(heatmap, np.float32)
    short = np.asarray(short, np.float32)
    if heatmap.ndim != 3 or short.shape != heatmap.shape[:2] + (2 * heatmap.shape[2],):
        raise ValueError(f"hough_vote: heatmap (h, w, K) and short (h, w, 2K) expected, got "
                         f"{heatmap.shape} and {short.shape}")
    if stride <= 0 or disk_radius <= 0:
        raise ValueError(f"hough_vote: stride and disk_radius must be > 0, got {stride}, {disk_radius}")
    h, w, k = heatmap.shape
    flat_heat = heatmap.reshape(-1)
    idx = np.flatnonzero(flat_heat > 0)
    weight = flat_heat[idx]
    cell, kk = np.divmod(idx, k)
    ii, jj = np.divmod(cell, w)
    off = _pairs(short).reshape(-1).take(idx)
    # Vote points in map cells, clamped to [-1, w] x [-1, h] (a vote beyond lands wholly
    # outside), splatted on a grid padded by 1 before and 2 after so no corner needs a check.
    tx = np.minimum(np.maximum(jj + off.real / stride, -1.0), float(w))
    ty = np.minimum(np.maximum(ii + off.imag / stride, -1.0), float(h))
    x0 = np.floor(tx)
    y0 = np.floor(ty)
    fx = (tx - x0).astype(np.float32)
    fy = (ty - y0).astype(np.float32)
    gx, gy = 1.0 - fx, 1.0 - fy
    row = (w + 3) * k
    t = (y0.astype(np.intp) + 1) * row + (x0.astype(np.intp) + 1) * k + kk
    target = np.concatenate([t, t + k, t + row, t + (row + k)])
    wts = np.concatenate([gx * gy, fx * gy, gx * fy, fx * fy]) * np.tile(weight, 4)
    out = np.bincount(target, wts, minlength=(h + 3) * row).reshape(h + 3, w + 3, k)
    area = math.pi * (disk_radius / stride) ** 2
    return (out[1:h + 1, 1:w + 1] / area).astype(np.float32)


def _box3(strong: np.ndarray) -> np.ndarray:
    """3x3 box sum over the two spatial axes (zero outside)."""
    p = np.pad(strong, ((1, 1), (1, 1), (0, 0)))
    rows = p[:-2] + p[1:-1] + p[2:]
    return rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]


def find_candidates(strong: np.ndarray, score_map: np.ndarray, short: np.ndarray, stride: int,
                    threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of the strong maps above ``threshold``, best first.

    Returns positions (N, 2) refined by the short offset (input pixels), types (N,) and
    scores (N,) read from ``score_map`` at the peak cell.
    """
    peaks = (strong >= threshold) & (strong > 0)
    peaks &= strong == ndimage.maximum_filter(strong, size=(3, 3, 1), mode="constant")
    i, j, k = np.nonzero(peaks)
    scores = score_map[i, j, k]
    order = np.argsort(-scores, kind="stable")
    i, j, k, scores = i[order], j[order], k[order], scores[order]
    off = short[i, j][np.arange(k.size)[:, None], _pair_channels(k)]
    xy = np.stack([j * stride, i * stride], axis=1).astype(np.float32) + off
    # Tied peak cells of one keypoint refine to the same point: keep the best of each.
    qx, qy = np.round(xy[:, 0] * 4), np.round(xy[:, 1] * 4)
    order = np.lexsort((qy, qx, k))                    # stable: best first within a tie
    ks, xs, ys = k[order], qx[order], qy[order]
    first = np.ones(k.size, bool)
    first[1:] = (ks[1:] != ks[:-1]) | (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
    first = np.sort(order[first])
    return xy[first], k[first], scores[first]


# -------------------------------------------------------------------------- walking
@functools.lru_cache(maxsize=16)
def _edge_arrays(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges as index arrays (from a, to b), each (2E,)."""
    edges = np.array(skeleton.directed_edges, np.intp).reshape(-1, 2)
    return edges[:, 0].copy(), edges[:, 1].copy()


@functools.lru_cache(maxsize=16)
def _probe_edges(skeleton: Skeleton) -> np.ndarray:
    """Per keypoint type t, one directed edge out of t (K,): toward keypoint 0 along the
    tree, and for keypoint 0 its first edge. Empty for a one-keypoint skeleton."""
    ea, eb = _edge_arrays(skeleton)
    k = skeleton.num_keypoints
    probe = np.full(k, -1, np.intp)
    if ea.size == 0:
        return probe[:0]
    probe[0] = int(np.flatnonzero(ea == 0)[0])
    frontier = [0]
    while frontier:                                     # the tree from keypoint 0
        a = frontier.pop()
        for e in np.flatnonzero(ea == a):
            b = int(eb[e])
            if b != 0 and probe[b] < 0:
                probe[b] = int(np.flatnonzero((ea == b) & (eb == a))[0])
                frontier.append(b)
    return probe


@dataclass
class _Walks:
    """Per candidate: keypoint positions (N, K, 2), scores (N, K), found (N, K), seed
    types (N,), the directed edges already walked (N, 2E), and whether the candidate is
    walked in full (N,)."""

    xy: np.ndarray
    score: np.ndarray
    found: np.ndarray
    seed: np.ndarray
    tried: np.ndarray
    active: np.ndarray


def _snap_votes(maps: Mapping[str, np.ndarray], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps for short-offset snaps: per cell p and keypoint type k the heat-weighted vote
    ``heat_k(p) (p + S_k(p))`` as complex64 x + iy (h, w, K), and ``heat_k(p)`` (h, w, K)."""
    if "snap_votes" in maps:
        return maps["snap_votes"]
    heat = maps["heatmap"]
    h, w = heat.shape[:2]
    cell = (np.arange(w, dtype=np.float32) * stride)[None, :] \
        + (np.arange(h, dtype=np.float32) * stride)[:, None] * np.complex64(1j)     # (h, w): x + iy
    return (_pairs(maps["short"]) + cell[..., None]) * heat, heat


def _snap(votes: tuple[np.ndarray, np.ndarray], xy: np.ndarray, types: np.ndarray, stride: int,
          steps: int) -> np.ndarray:
    """``steps`` short-offset snaps of points xy (M, 2) of keypoint types (M,).

    A snap moves a point to the heat-weighted mean of the votes ``p + S_k(p)`` of the 4
    cells around it (``votes`` is :func:`_snap_votes`), not by the bilinear short offset:
    cells outside the disk (heat 0, offset 0) drop out, so a point near a disk's edge
    still lands exactly on the keypoint (inside the disk both agree). A point with no
    heat around it stays put."""
    for _ in range(steps):
        vote, heat = _Sampler(xy, votes[1].shape, stride).many(votes, types)
        ok = heat > 1e-6
        mean = (vote / np.where(ok, heat, np.float32(1))).view(np.float32).reshape(-1, 2)
        xy = np.where(ok[:, None], mean, xy)
    return xy


def _walk_tree(maps: Mapping[str, np.ndarray], score_map: np.ndarray, walks: _Walks,
               skeleton: Skeleton, *, stride: int, snap_steps: int, threshold: float,
               radius: float, max_steps: int = -1) -> None:
    """Breadth-first walk from found keypoints into missing ones, every candidate at once.

    Each step takes every directed edge (a, b) not tried yet with a found and b missing:
    ``y_b = y_a + M_ab(y_a)``, snapped ``snap_steps`` times by ``S_b``, scored on the score
    map; b is found when its score is ``>= threshold`` and the walk back along (b, a),
    snapped, lands within ``radius`` of y_a (else y_b is someone else's keypoint: their
    mid-range offsets lead to their own a). The best try wins when several edges reach b
    in one step. Only found keypoints are walked from, so a missing
    keypoint passes no garbage on. Only ``walks.active`` candidates move. Updates
    ``walks`` in place; the loop runs once per tree level (at most ``max_steps`` times if
    that is >= 0).
    """
    ea, eb = _edge_arrays(skeleton)
    num_e = skeleton.num_edges
    k = skeleton.num_keypoints
    mid, short = _pairs(maps["mid"]), _snap_votes(maps, stride)
    rows = np.flatnonzero(walks.active)
    while max_steps != 0 and rows.size:
        max_steps -= 1
        found = walks.found[rows]
        n, e = np.nonzero(found[:, ea] & ~found[:, eb] & ~walks.tried[rows])
        if n.size == 0:
            return
        n = rows[n]
        rows = n[np.r_[True, n[1:] != n[:-1]]]  # only rows that change can have more to do
        walks.tried[n, e] = True
        a, b = ea[e], eb[e]
        ya = walks.xy[n, a]
        yb = _snap(short, ya + _sample_pairs(mid, ya, e, stride), b, stride, snap_steps)
        at_yb = _Sampler(yb, mid.shape, stride)
        sc = at_yb(score_map, b)
        rev = np.where(e < num_e, e + num_e, e - num_e)
        back = _snap(short, yb + _sample_pairs(mid, yb, rev, stride, at_yb), a, stride, snap_steps)
        sc = np.where(_sqnorm(back - ya) <= radius * radius, sc, 0.0)
        key = n * k + b
        if np.bincount(key).max() > 1:          # several edges reached one b: best try wins
            order = np.lexsort((sc, key))
            last = order[np.r_[key[order][1:] != key[order][:-1], True]]
            n, b, yb, sc = n[last], b[last], yb[last], sc[last]
        ok = sc >= threshold
        walks.xy[n, b] = yb
        walks.score[n, b] = np.where(ok, sc, 0.0)
        walks.found[n, b] = ok


def _long_body(maps: Mapping[str, np.ndarray]) -> np.ndarray:
    """Long-range offsets times body probability, as a :func:`_pairs` view (h, w, K)."""
    if "long_body" in maps:
        return maps["long_body"]
    return _pairs(maps["long"] * maps["body"])


def _long_range(maps: Mapping[str, np.ndarray], xy: np.ndarray, types: np.ndarray,
                stride: float, sampler: Optional[_Sampler] = None) -> tuple[np.ndarray, np.ndarray]:
    """``L_k`` at points xy (M, 2) for types (M,), and the body probability there (M,).

    Bilinear weights are multiplied by the body probability (:func:`_long_body`), so
    off-body cells (where long-range offsets mean nothing) do not drag the sample.
    """
    body = maps["body"]
    sampler = sampler or _Sampler(xy, body.shape, stride)
    num = _sample_pairs(_long_body(maps), xy, types, stride, sampler)
    den = sampler(body, np.zeros_like(types))
    return num / np.maximum(den, 1e-6)[:, None], den


def _long_range_refine(maps: Mapping[str, np.ndarray], score_map: np.ndarray, walks: _Walks,
                       rows: np.ndarray, *, stride: int, snap_steps: int, threshold: float,
                       radius: float, body_threshold: float, unchecked_weight: float) -> None:
    """Re-decide every non-seed keypoint of people ``rows`` from long-range votes, in place.

    Each found keypoint y (source) of a person votes for keypoint k at ``y + L_k(y)``,
    snapped by the short offsets and scored on the strong map; the walked position votes
    too. A vote is checked the other way: where the body is, the long-range offset of the
    voted point must lead back (snapped) to within ``radius`` of the source, else the vote
    belongs to someone else and is dropped; off the body it cannot be checked and counts
    ``unchecked_weight`` (``DecoderConfig.unchecked_vote_weight``). Votes weigh their score
    times the body
    probability at the source. The vote with the most weight within ``radius`` wins; the
    keypoint is found if it scores ``>= threshold``; missing ones sit at the winning vote.
    """
    k = walks.found.shape[1]
    xy, found, score = walks.xy[rows], walks.found[rows], walks.score[rows]
    seed = walks.seed[rows]
    p = rows.size
    tgt_ok = np.arange(k)[None, :] != seed[:, None]                              # (P, K)
    pi, src, tgt = np.nonzero(found[:, :, None] & tgt_ok[:, None, :] & ~np.eye(k, dtype=bool))
    ys = xy[pi, src]
    lr, body_src = _long_range(maps, ys, tgt, stride)
    short = _snap_votes(maps, stride)
    votes = _snap(short, ys + lr, tgt, stride, snap_steps)
    at_votes = _Sampler(votes, score_map.shape, stride)
    vscore = at_votes(score_map, tgt)
    back, body_vote = _long_range(maps, votes, src, stride, at_votes)
    back = _snap(short, votes + back, src, stride, snap_steps)
    agrees = _sqnorm(back - ys) <= radius * radius
    check = np.where(agrees, 1.0, np.where(body_vote < body_threshold, unchecked_weight, 0.0))
    weight = vscore * np.minimum(body_src, 1.0) * check
    # Dense (P, K_target, K_slot): slot = voting keypoint; slot = target holds the walked one.
    ex, ey, sc, wt = (np.zeros((p, k, k), np.float32) for _ in range(4))
    ex[pi, tgt, src], ey[pi, tgt, src] = votes[:, 0], votes[:, 1]
    sc[pi, tgt, src] = vscore
    wt[pi, tgt, src] = weight
    diag = np.arange(k)
    ex[:, diag, diag], ey[:, diag, diag] = xy[..., 0], xy[..., 1]
    sc[:, diag, diag] = np.where(found, score, 0.0)
    wt[:, diag, diag] = sc[:, diag, diag]
    dx = ex[..., :, None] - ex[..., None, :]                                    # (P, K, K, K)
    dy = ey[..., :, None] - ey[..., None, :]
    dx *= dx
    dy *= dy
    dx += dy
    close = (dx <= radius * radius).astype(np.float32)
    support = np.einsum("ptij,ptj->pti", close, wt) + 1e-3 * wt
    sc = np.where(wt > 0, sc, 0.0)
    has_vote = sc.max(-1) > 0
    best = support.argmax(-1)                                                    # (P, K)
    r_, t_ = np.nonzero(tgt_ok & has_vote)
    b_ = best[r_, t_]
    new_sc = sc[r_, t_, b_]
    ok = new_sc >= threshold
    walks.xy[rows[r_], t_] = np.stack([ex[r_, t_, b_], ey[r_, t_, b_]], axis=1)
    walks.score[rows[r_], t_] = np.where(ok, new_sc, 0.0)
    walks.found[rows[r_], t_] = ok


def walk_candidates(maps: Mapping[str, np.ndarray], score_map: np.ndarray, xy: np.ndarray,
                    types: np.ndarray, scores: np.ndarray, *, skeleton: Skeleton, stride: int,
                    cfg: DecoderConfig) -> _Walks:
    """Walk the tree from the candidates (the mid-range walk, no long-range).

    Every candidate first takes one step to its tree neighbours; a neighbour found within
    ``nms_radius`` of another candidate of that type links the two (one person). Only the
    best candidate of each linked group is walked in full: the others are its keypoints,
    which its walk reaches by the same edges, so the greedy seeding would drop them
    anyway (:func:`_greedy_seeds` walks any that it does reach).
    """
    n, k = types.size, skeleton.num_keypoints
    rows = np.arange(n)
    walks = _Walks(xy=np.repeat(xy[:, None, :], k, axis=1).astype(np.float32),
                   score=np.zeros((n, k), np.float32), found=np.zeros((n, k), bool), seed=types,
                   tried=np.zeros((n, 2 * skeleton.num_edges), bool), active=np.ones(n, bool))
    walks.score[rows, types] = scores
    walks.found[rows, types] = True
    kw = dict(stride=stride, snap_steps=cfg.snap_steps, threshold=cfg.peak_threshold,
              radius=cfg.nms_radius)
    probe = _probe_edges(skeleton)
    if probe.size:
        # First step: along each candidate's probe edge only (toward keypoint 0), enough
        # to link a person's candidates into one group; the other edges are walked later.
        walks.tried[:] = True
        walks.tried[rows, probe[types]] = False
        _walk_tree(maps, score_map, walks, skeleton, max_steps=1, **kw)
        walks.tried[:] = False
        walks.tried[rows, probe[types]] = True
    walks.active[:] = _group_leaders(walks, xy, types, cfg.nms_radius)
    _walk_tree(maps, score_map, walks, skeleton, **kw)
    return walks


def _group_leaders(walks: _Walks, xy: np.ndarray, types: np.ndarray, radius: float) -> np.ndarray:
    """Mask of the best candidate (lowest index) of each group of linked candidates."""
    n = types.size
    a, b = np.nonzero(walks.found & (np.arange(walks.found.shape[1])[None, :] != types[:, None]))
    # Compare each reached point with the candidates of its type only: candidates sorted
    # by type, each point against its type's block (padded to the longest block).
    order = np.argsort(types, kind="stable")
    count = np.bincount(types, minlength=walks.found.shape[1])
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    width = int(count.max()) if n else 0
    slot = np.arange(width)
    cand = order[np.minimum(start[b][:, None] + slot, n - 1)]                    # (pairs, width)
    reached = walks.xy[a, b]
    dx, dy = reached[:, :1] - xy[:, 0][cand], reached[:, 1:] - xy[:, 1][cand]
    d2 = dx * dx + dy * dy
    pa, ps = np.nonzero((slot < count[b][:, None]) & (d2 <= radius * radius))
    return _component_minimum(a[pa], cand[pa, ps], n) == np.arange(n)


def _component_minimum(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Per node of the undirected graph with edges (u, v) on n nodes: the lowest node of its
    connected component (min-label propagation with pointer jumping)."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[u], label[v])
        new = label.copy()
        np.minimum.at(new, u, low)
        np.minimum.at(new, v, low)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def _greedy_seeds(walks: _Walks, xy: np.ndarray, types: np.ndarray, nms_radius: float,
                  walk: Callable[[], None]) -> np.ndarray:
    """Candidates best first; one is kept unless a kept person has a found keypoint of its
    type within ``nms_radius`` of it. A kept candidate not yet walked in full is walked
    (``walk`` continues the active walks). Loops once per kept person; which candidates
    each walked candidate would suppress is computed for all of them at once."""
    r2 = nms_radius * nms_radius

    def suppresses(rows: np.ndarray) -> np.ndarray:
        """(len(rows), N): candidate n has a found keypoint of the row's person near it."""
        pts = walks.xy[rows]                                       # (rows, K, 2)
        dx, dy = pts[:, types, 0] - xy[:, 0], pts[:, types, 1] - xy[:, 1]
        return walks.found[rows][:, types] & (dx * dx + dy * dy <= r2)

    active = np.flatnonzero(walks.active)
    row_of = np.full(types.size, -1, np.intp)
    row_of[active] = np.arange(active.size)
    table = suppresses(active)
    alive = np.ones(types.size, bool)
    kept: list[int] = []
    c = 0
    while c < types.size:
        c += int(alive[c:].argmax())
        if not alive[c]:
            break
        if walks.active[c]:
            gone = table[row_of[c]]
        else:
            walks.active[c] = True
            walk()
            gone = suppresses(np.array([c]))[0]
        kept.append(c)
        alive &= ~gone
        alive[c] = False
        c += 1
    return np.asarray(kept, np.int64)


def select_people(maps: Mapping[str, np.ndarray], score_map: np.ndarray, walks: _Walks,
                  xy: np.ndarray, types: np.ndarray, *, skeleton: Skeleton, stride: int,
                  cfg: DecoderConfig) -> np.ndarray:
    """Seeding (greedy NMS over candidates), with long-range completion of the kept people.

    Kept people are completed with :func:`_long_range_refine` and walked on from the
    keypoints it found; seeding is then redone with the completed walks, until no new
    person is kept. Returns the indices of the candidates that seed people.
    """
    def walk() -> None:
        _walk_tree(maps, score_map, walks, skeleton, stride=stride, snap_steps=cfg.snap_steps,
                   threshold=cfg.peak_threshold, radius=cfg.nms_radius)

    seeds = _greedy_seeds(walks, xy, types, cfg.nms_radius, walk)
    if not cfg.use_long_range:
        return seeds
    done = np.zeros(types.size, bool)
    while True:
        rows = seeds[~done[seeds]]
        if rows.size == 0:
            return seeds
        done[rows] = True
        _long_range_refine(maps, score_map, walks, rows, stride=stride, snap_steps=cfg.snap_steps,
                           threshold=cfg.peak_threshold, radius=cfg.nms_radius,
                           body_threshold=cfg.body_threshold,
                           unchecked_weight=cfg.unchecked_vote_weight)
        walk()
        seeds = _greedy_seeds(walks, xy, types, cfg.nms_radius, walk)


def soft_nms_scores(xy: np.ndarray, scores: np.ndarray, nms_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """PersonLab soft keypoint-NMS person scores.

    xy (P, K, 2), scores (P, K) (0 for keypoints not found). People are ranked by their
    total keypoint score; a keypoint counts unless a better person has the same keypoint
    within ``nms_radius``. Returns (person scores (P,), ranking used (P,)).
    """
    p, k = scores.shape
    order = np.argsort(-scores.sum(axis=1), kind="stable")
    xy, sc = xy[order], scores[order]
    d2 = _sqnorm(xy[:, None] - xy[None])                       # (P, P, K)
    close = (d2 <= nms_radius * nms_radius) & (sc[:, None] > 0) & np.tri(p, k=-1, dtype=bool).T[:, :, None]
    suppressed = close.any(axis=0)                                       # by a better person
    out = np.empty(p, np.float64)
    out[order] = (sc * ~suppressed).sum(axis=1) / k
    return out, order


# --------------------------------------------------------------------------- masks
def assign_body_cells(body: np.ndarray, long: np.ndarray, xy: np.ndarray, found: np.ndarray,
                      *, stride: int, body_threshold: float, mask_threshold: float,
                      min_scale: float) -> np.ndarray:
    """Label map (h, w) int: the person each body cell joins, -1 for none.

    Cell p embeds as ``p + L_k(p)``; its distance to person j is the RMS over j's found
    keypoints of ``|p + L_k(p) - y_jk|``, divided by j's size (sqrt of its keypoint-box
    area, at least ``min_scale``). It joins the nearest person if below ``mask_threshold``.
    """
    h, w = body.shape[:2]
    labels = np.full(h * w, -1, np.int64)
    cells = np.flatnonzero(body.reshape(-1) >= body_threshold)
    if cells.size == 0 or xy.shape[0] == 0:
        return labels.reshape(h, w)
    k = xy.shape[1]
    ii, jj = np.divmod(cells, w)
    p = np.stack([jj, ii], axis=1).astype(np.float32) * stride
    emb = p[:, None, :] + long.reshape(h * w, k, 2)[cells]              # (C, K, 2)
    f = found.astype(np.float32)                                          # (P, K)
    yf = xy * f[:, :, None]
    # Sums of squared distances over each person's found keypoints, without a (C, P, K)
    # tensor (einsum: small products, no BLAS threads).
    e2 = emb[..., 0] ** 2 + emb[..., 1] ** 2
    d2 = (np.einsum("ck,pk->cp", e2, f)
          - 2.0 * np.einsum("cj,pj->cp", emb.reshape(cells.size, -1), yf.reshape(len(f), -1))
          + (f * (xy[..., 0] ** 2 + xy[..., 1] ** 2)).sum(1))
    d2 /= np.maximum(f.sum(1), 1.0)
    lo = np.where(found[:, :, None], xy, np.inf).min(axis=1)
    hi = np.where(found[:, :, None], xy, -np.inf).max(axis=1)
    ext = np.where(np.isfinite(hi - lo), hi - lo, 0.0)
    scale = np.maximum(np.sqrt(ext[:, 0] * ext[:, 1]), min_scale)
    dist = np.sqrt(np.maximum(d2, 0.0)) / scale
    best = dist.argmin(axis=1)
    ok = dist[np.arange(cells.size), best] < mask_threshold
    labels[cells[ok]] = best[ok]
    return labels.reshape(h, w)


def _grow_labels(labels: np.ndarray) -> np.ndarray:
    """Give unlabelled cells next to labelled ones a neighbour's label (one cell)."""
    grown = ndimage.maximum_filter(labels, size=3, mode="constant", cval=-1)
    return np.where(labels >= 0, labels, grown)


def _to_original_affine(stride: int, t: ImageTransform) -> np.ndarray:
    """2x3 matrix: original pixel (u, v) -> map coordinates."""
    a = t.scale / stride
    return np.array([[a, 0.0, t.offset_x / stride], [0.0, a, t.offset_y / stride]], np.float64)


def upsample_masks(labels: np.ndarray, body: np.ndarray, num_people: int, *, stride: int,
                   transform: ImageTransform, size: tuple[int, int],
                   body_threshold: float) -> tuple[list[np.ndarray], list[Optional[tuple[int, int, int, int]]]]:
    """Per-person bool masks (H, W) in original pixels from the map-resolution labels,
    and each mask's extent ``(x0, y0, x1, y1)`` (inclusive; None when empty).

    Body probability is upsampled bilinearly and thresholded; the person label comes from
    the nearest map cell (labels grown by one cell so body edges keep their owner). One
    label image is upsampled for everyone, and each person's mask is filled only inside
    that person's pixel box, so the cost is about one image area, not one per person.
    """
    height, width = size
    grown = _grow_labels(labels)
    masks = [np.zeros((height, width), bool) for _ in range(num_people)]
    extents: list[Optional[tuple[int, int, int, int]]] = [None] * num_people
    cell_boxes = ndimage.find_objects(grown + 1, max_label=num_people)     # slices or None
    people = [j for j, box in enumerate(cell_boxes) if box is not None]
    if not people:
        return masks, extents
    # Cell ranges j0, i0, j1, i1 (inclusive) of each person, and of everyone.
    cells = np.array([[cell_boxes[j][1].start, cell_boxes[j][0].start, cell_boxes[j][1].stop - 1,
                       cell_boxes[j][0].stop - 1] for j in people])
    # Upsample only the region the labelled cells cover (plus one cell).
    c0, r0, c1, r1 = (int(v) for v in _cells_to_pixels(*cells[:, :2].min(0), *cells[:, 2:].max(0),
                                                        stride, transform, (height, width)))
    if c1 <= c0 or r1 <= r0:
        return masks, extents
    m = _to_original_affine(stride, transform)
    m[:, 2] += m[:, :2] @ np.array([c0, r0], np.float64)       # crop origin: pixel (c0, r0)
    flags = cv2.WARP_INVERSE_MAP
    dsize = (c1 - c0, r1 - r0)
    body_up = cv2.warpAffine(np.ascontiguousarray(body[..., 0], np.float32), m, dsize,
                             flags=cv2.INTER_LINEAR | flags, borderMode=cv2.BORDER_CONSTANT)
    lab = cv2.warpAffine((grown + 1).astype(np.float32), m, dsize,      # 0: nobody, j + 1: person j
                         flags=cv2.INTER_NEAREST | flags, borderMode=cv2.BORDER_CONSTANT)
    lab *= body_up >= body_threshold
    # Each person's pixels lie within the pixels of its cells (plus one cell).
    x0, y0, x1, y1 = _cells_to_pixels(cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3], stride,
                                      transform, (height, width))
    x0, y0 = np.maximum(x0, c0) - c0, np.maximum(y0, r0) - r0
    x1, y1 = np.minimum(x1, c1) - c0, np.minimum(y1, r1) - r0
    for j, a0, b0, a1, b1 in zip(people, x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
        crop = lab[b0:b1, a0:a1] == j + 1
        bx, by, bw, bh = cv2.boundingRect(crop.view(np.uint8)) if crop.size else (0, 0, 0, 0)
        if bw == 0:
            continue
        x, y = c0 + a0 + bx, r0 + b0 + by
        masks[j][y:y + bh, x:x + bw] = crop[by:by + bh, bx:bx + bw]
        extents[j] = (x, y, x + bw - 1, y + bh - 1)
    return masks, extents


def _cells_to_pixels(j0, i0, j1, i1, stride: int, transform: ImageTransform,
                     size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Original-pixel ranges ``[c0, c1) x [r0, r1)`` covering map cells j0..j1, i0..i1 plus
    one cell (scalars or arrays of one shape)."""
    lo = np.stack([np.asarray(j0) - 1, np.asarray(i0) - 1], axis=-1).astype(np.float32) * stride
    hi = np.stack([np.asarray(j1) + 1, np.asarray(i1) + 1], axis=-1).astype(np.float32) * stride
    lo, hi = transform.to_original(lo), transform.to_original(hi)
    c0 = np.maximum(np.floor(lo[..., 0]).astype(np.int64), 0)
    r0 = np.maximum(np.floor(lo[..., 1]).astype(np.int64), 0)
    c1 = np.minimum(np.ceil(hi[..., 0]).astype(np.int64) + 1, size[1])
    r1 = np.minimum(np.ceil(hi[..., 1]).astype(np.int64) + 1, size[0])
    return c0, r0, c1, r1


def _boxes(extents: list[Optional[tuple[int, int, int, int]]],
           kps: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Boxes (x, y, w, h) around each mask extent (x0, y0, x1, y1) and the keypoints with
    score > 0 (all keypoints when none has), for kps (P, K, 3)."""
    if kps.shape[0] == 0:
        return []
    some = (kps[:, :, 2] > 0).any(axis=1)
    use = (kps[:, :, 2] > 0) | ~some[:, None]                                   # (P, K)
    lo = np.where(use[..., None], kps[..., :2], np.inf).min(axis=1).astype(np.float32)
    hi = np.where(use[..., None], kps[..., :2], -np.inf).max(axis=1).astype(np.float32)
    ext = np.array([e if e is not None else (np.inf, np.inf, -np.inf, -np.inf) for e in extents],
                   np.float32).reshape(-1, 4)
    lo, hi = np.minimum(lo, ext[:, :2]), np.maximum(hi, ext[:, 2:])
    size = hi - lo
    return [(float(a), float(b), float(c), float(d))
            for a, b, c, d in zip(lo[:, 0], lo[:, 1], size[:, 0], size[:, 1])]


# -------------------------------------------------------------------------- decode
def _check_maps(maps: Mapping[str, np.ndarray], skeleton: Skeleton,
                cfg: DecoderConfig) -> dict[str, np.ndarray]:
    k, e2 = skeleton.num_keypoints, 2 * skeleton.num_edges
    need = {"heatmap": k, "short": 2 * k, "mid": 2 * e2}
    if cfg.use_long_range or cfg.instance_masks:
        need["long"] = 2 * k
        need["body"] = 1
    missing = [key for key in need if key not in maps]
    if missing:
        raise ValueError(f"decode: maps lack {missing} (need {list(need)})")
    out = {key: np.ascontiguousarray(maps[key], dtype=np.float32) for key in need}
    shape = out["heatmap"].shape
    if len(shape) != 3 or min(shape[:2]) < 1:
        raise ValueError(f"decode: heatmap must be one image (h, w, K), got shape {shape}")
    for key, c in need.items():
        if out[key].shape != shape[:2] + (c,):
            raise ValueError(f"decode: {key} must be {shape[:2] + (c,)} for K={k}, E={e2 // 2}, "
                             f"got {out[key].shape}")
    return out


def _default_transform(shape: tuple[int, ...], stride: int) -> ImageTransform:
    h, w = shape[:2]
    return ImageTransform(original_width=stride * (w - 1) + 1, original_height=stride * (h - 1) + 1)


def _original_size(t: ImageTransform, shape: tuple[int, ...], stride: int) -> tuple[int, int]:
    """(H, W) of the original image: from the transform, else what the input covers."""
    h, w = shape[:2]
    width = t.original_width or int(math.ceil((stride * (w - 1) + 1 - t.offset_x) / t.scale))
    height = t.original_height or int(math.ceil((stride * (h - 1) + 1 - t.offset_y) / t.scale))
    return max(height, 1), max(width, 1)


def decode(maps: Mapping[str, np.ndarray], *, skeleton: Skeleton, stride: int, disk_radius: float,
           cfg: DecoderConfig, transform: ImageTransform | None = None) -> list["Person"]:
    """Maps of one image (docs/MAPS.md, ``(h, w, C)``) -> people, best score first."""
    if stride < 1 or disk_radius <= 0:
        raise ValueError(f"decode: stride must be >= 1 and disk_radius > 0, got {stride}, {disk_radius}")
    if transform is not None and transform.scale <= 0:
        raise ValueError(f"decode: transform.scale must be > 0, got {transform.scale}")
    m = _check_maps(maps, skeleton, cfg)
    if transform is None:
        transform = _default_transform(m["heatmap"].shape, stride)
    strong = hough_vote(m["heatmap"], m["short"], stride, disk_radius)
    score_map = _box3(strong)
    xy, types, scores = find_candidates(strong, score_map, m["short"], stride, cfg.peak_threshold)
    if types.size == 0:
        return []
    if cfg.use_long_range:
        m["long_body"] = _long_body(m)
    m["snap_votes"] = _snap_votes(m, stride)
    walks = walk_candidates(m, score_map, xy, types, scores, skeleton=skeleton, stride=stride, cfg=cfg)
    seeds = select_people(m, score_map, walks, xy, types, skeleton=skeleton, stride=stride, cfg=cfg)
    pxy, found = walks.xy[seeds], walks.found[seeds]
    pscore = np.where(found, walks.score[seeds], 0.0).astype(np.float32)
    person_score, _ = soft_nms_scores(pxy, pscore, cfg.nms_radius)
    keep = np.flatnonzero((person_score > 0) & (person_score >= cfg.min_person_score))
    keep = keep[np.argsort(-person_score[keep], kind="stable")][: cfg.max_people]
    pxy, found, pscore, person_score = pxy[keep], found[keep], pscore[keep], person_score[keep]
    masks: list[Optional[np.ndarray]] = [None] * keep.size
    extents: list[Optional[tuple[int, int, int, int]]] = [None] * keep.size
    if cfg.instance_masks and keep.size:
        labels = assign_body_cells(m["body"], m["long"], pxy, found, stride=stride,
                                   body_threshold=cfg.body_threshold,
                                   mask_threshold=cfg.mask_threshold, min_scale=disk_radius)
        masks, extents = upsample_masks(labels, m["body"], keep.size, stride=stride, transform=transform,
                               size=_original_size(transform, m["heatmap"].shape, stride),
                               body_threshold=cfg.body_threshold)
    kps = np.concatenate([transform.to_original(pxy), pscore[..., None]], axis=-1).astype(np.float32)
    boxes = _boxes(extents, kps)
    return [Person(keypoints=kps[j], score=float(person_score[j]), box=boxes[j], mask=masks[j])
            for j in range(keep.size)]


@dataclass(frozen=True)
class Decoder:
    """The decoder's constants; ``decoder(maps, transform)`` runs :func:`decode`."""

    skeleton: Skeleton
    stride: int
    disk_radius: float
    cfg: DecoderConfig = field(default_factory=DecoderConfig)

    @classmethod
    def from_config(cls, cfg: "Config", stride: Optional[int] = None) -> "Decoder":
        """Decoder for ``cfg``; stride defaults to the evaluation output stride."""
        return cls(skeleton=cfg.skeleton,
                   stride=int(stride if stride is not None else cfg.eval_output_stride),
                   disk_radius=float(cfg.codec.disk_radius), cfg=cfg.decoder)

    def __call__(self, maps: Mapping[str, np.ndarray],
                 transform: ImageTransform | None = None) -> list[Person]:
        """People in one image's maps, best score first."""
        return decode(maps, skeleton=self.skeleton, stride=self.stride,
                      disk_radius=self.disk_radius, cfg=self.cfg, transform=transform)
