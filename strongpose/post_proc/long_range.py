"""Long-range completion: one person in one piece across a missing keypoint (docs/DECODER.md §4).

Long-range offsets point from every body pixel to every keypoint of its person, across
gaps the mid-range walk cannot cross. Each found keypoint of a walked person votes for
every other keypoint; the best-supported vote wins; the walk then resumes from what was
found this way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strongpose.skeleton import Skeleton

from .sampling import Bilinear, sqnorm
from .walk import Poses, WalkMaps, walk


@dataclass(frozen=True)
class LongRangeMaps:
    """What completion reads: long-range offsets times body (h, w, 2K), body (h, w, 1),
    and the walk's maps."""

    long_body: np.ndarray
    body: np.ndarray
    walk: WalkMaps

    @classmethod
    def build(cls, long: np.ndarray, body: np.ndarray, walk_maps: WalkMaps) -> "LongRangeMaps":
        return cls(long_body=long * body, body=body, walk=walk_maps)

    def sample(self, xy: np.ndarray, types: np.ndarray,
               at: Bilinear | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``L_k`` at points xy (M, 2) for types (M,) with body-weighted bilinear weights
        (off-body cells, where long range means nothing, do not drag it), and the body
        probability there (M,)."""
        at = at or Bilinear(xy, self.body.shape, self.walk.snap.stride)
        body = at(self.body, np.zeros(types.size, np.intp))
        offset = at.pairs(self.long_body, types) / np.maximum(body, np.float32(1e-6))[:, None]
        return offset, body


@dataclass(frozen=True)
class Votes:
    """Per person, target keypoint and slot (P, K, K): vote positions ``xy`` (.., 2),
    ``score`` (effective: 0 where the weight is 0), ``weight`` (float64) and whether the slot holds a
    vote (``exists``). Slot j holds the vote of source keypoint j; slot q of target q holds
    the walked keypoint."""

    xy: np.ndarray
    score: np.ndarray
    weight: np.ndarray
    exists: np.ndarray


def long_range_votes(poses: Poses, maps: LongRangeMaps, *, radius: float, body_threshold: float,
                     unchecked_weight: float) -> Votes:
    """Every found keypoint votes for every other keypoint (except the seed type) at
    ``snap(y_j + L_q(y_j))``, checked back with ``L_j`` at the vote; the walked keypoints
    vote for themselves."""
    p, k = poses.found.shape
    slot_ok = ~np.eye(k, dtype=bool)[None] & (np.arange(k) != poses.seed[:, None])[:, :, None]
    pi, tgt, src = np.nonzero(slot_ok & poses.found[:, None, :])       # (person, target, source)
    ys = poses.xy[pi, src]
    offset, body_src = maps.sample(ys, tgt)
    snap, stride = maps.walk.snap, maps.walk.snap.stride
    v = snap(ys + offset, tgt)
    at_v = Bilinear(v, maps.body.shape, stride)
    sv = at_v(maps.walk.score_map, tgt)
    offset_back, body_v = maps.sample(v, src, at_v)
    agrees = sqnorm(snap(v + offset_back, src) - ys) <= radius * radius
    check = np.where(agrees, 1.0, np.where(body_v < body_threshold, unchecked_weight, 0.0))
    weight = sv * np.minimum(body_src, 1.0).astype(np.float64) * check

    xy = np.zeros((p, k, k, 2), np.float32)
    score, wt = np.zeros((p, k, k), np.float32), np.zeros((p, k, k), np.float64)
    exists = np.zeros((p, k, k), bool)
    xy[pi, tgt, src], score[pi, tgt, src], wt[pi, tgt, src] = v, sv, weight
    exists[pi, tgt, src] = True
    diag = np.arange(k)
    xy[:, diag, diag], wt[:, diag, diag] = poses.xy, poses.score
    score[:, diag, diag], exists[:, diag, diag] = poses.score, True
    return Votes(xy=xy, score=np.where(wt > 0, score, 0), weight=wt, exists=exists)


def best_votes(votes: Votes, poses: Poses, *, radius: float, threshold: float) -> Poses:
    """Each keypoint (but the seed) becomes its vote with the most support (the weights of
    the votes within ``radius``, plus 1e-3 of its own), found if it scores ``>= threshold``.
    Keypoints without a vote scoring > 0 stay as walked."""
    x, y = np.ascontiguousarray(votes.xy[..., 0]), np.ascontiguousarray(votes.xy[..., 1])
    dx, dy = x[..., :, None] - x[..., None, :], y[..., :, None] - y[..., None, :]   # (P, K, K, K)
    d2 = dx * dx + dy * dy
    # float64: the 1e-3 tie-break must survive the sum over a cluster of votes.
    support = np.einsum("ptij,ptj->pti", (d2 <= radius * radius).astype(np.float64), votes.weight)
    support = np.where(votes.exists, support + 1e-3 * votes.weight, -np.inf)
    best = support.argmax(axis=-1)                                                # (P, K)
    p, k = poses.found.shape
    decide = (votes.score.max(axis=-1) > 0) & (np.arange(k) != poses.seed[:, None])
    pi, q = np.nonzero(decide)
    win = best[pi, q]
    new_score = votes.score[pi, q, win]
    ok = new_score >= threshold
    xy, score, found = poses.xy.copy(), poses.score.copy(), poses.found.copy()
    xy[pi, q] = votes.xy[pi, q, win]
    score[pi, q] = np.where(ok, new_score, 0)
    found[pi, q] = ok
    return Poses(xy, score, found, poses.seed, poses.tried)


def complete(poses: Poses, maps: LongRangeMaps, skeleton: Skeleton, *, threshold: float,
             radius: float, body_threshold: float, unchecked_weight: float) -> Poses:
    """Long-range completion of walked poses, then the walk resumed from what it found."""
    if len(poses) == 0:
        return poses
    votes = long_range_votes(poses, maps, radius=radius, body_threshold=body_threshold,
                             unchecked_weight=unchecked_weight)
    decided = best_votes(votes, poses, radius=radius, threshold=threshold)
    return walk(decided, maps.walk, skeleton, threshold=threshold, radius=radius)
