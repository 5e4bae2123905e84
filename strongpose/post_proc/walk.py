"""People as walked poses, and the walk along the kinematic tree (docs/DECODER.md §3).

A :class:`Poses` holds one row per person: every keypoint's position, score and whether
it was found, and the seed keypoint type the person grew from. :func:`walk` grows every
row at once, one tree level per step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from strongpose.skeleton import Skeleton

from .sampling import Bilinear, Snapper, sqnorm
from .voting import Candidates


@dataclass(frozen=True)
class Poses:
    """Rows of people: ``xy`` (N, K, 2) input pixels, ``score`` (N, K) (0 where not
    found), ``found`` (N, K) bool, ``seed`` (N,) the seed keypoint type, ``tried``
    (N, 2E) bool the directed edges walked so far (each at most once per person)."""

    xy: np.ndarray
    score: np.ndarray
    found: np.ndarray
    seed: np.ndarray
    tried: np.ndarray

    @classmethod
    def from_candidates(cls, cands: Candidates, skeleton: Skeleton) -> "Poses":
        """One row per candidate: its keypoint found, every other keypoint at its position."""
        n, num_keypoints = len(cands), skeleton.num_keypoints
        rows = np.arange(n)
        xy = np.repeat(cands.xy[:, None, :], num_keypoints, axis=1).astype(np.float32)
        score = np.zeros((n, num_keypoints), np.float32)
        found = np.zeros((n, num_keypoints), bool)
        score[rows, cands.types] = cands.scores
        found[rows, cands.types] = True
        return cls(xy=xy, score=score, found=found, seed=cands.types.copy(),
                   tried=np.zeros((n, len(skeleton.directed_edges)), bool))

    def __len__(self) -> int:
        return int(self.seed.size)

    def take(self, rows: np.ndarray) -> "Poses":
        """The rows ``rows``, in that order."""
        return Poses(self.xy[rows], self.score[rows], self.found[rows], self.seed[rows],
                     self.tried[rows])

    def put(self, rows: np.ndarray, other: "Poses") -> "Poses":
        """A copy with rows ``rows`` replaced by ``other``'s rows."""
        xy, score, found, tried = self.xy.copy(), self.score.copy(), self.found.copy(), self.tried.copy()
        xy[rows], score[rows], found[rows], tried[rows] = other.xy, other.score, other.found, other.tried
        return Poses(xy, score, found, self.seed, tried)


@dataclass(frozen=True)
class WalkMaps:
    """What the walk reads: mid-range displacements (h, w, 4E), the score map (h, w, K)
    and the short-offset snapper."""

    mid: np.ndarray
    score_map: np.ndarray
    snap: Snapper


@functools.lru_cache(maxsize=16)
def edge_arrays(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges as index arrays: from (2E,), to (2E,), and each edge's reverse (2E,)."""
    edges = np.array(skeleton.directed_edges, np.intp).reshape(-1, 2)
    e = skeleton.num_edges
    reverse = np.concatenate([np.arange(e, 2 * e), np.arange(e)])
    return edges[:, 0].copy(), edges[:, 1].copy(), reverse


def walk(poses: Poses, maps: WalkMaps, skeleton: Skeleton, *, threshold: float,
         radius: float) -> Poses:
    """Grow every pose from its found keypoints into its missing ones, a tree level a step.

    Along directed edge (a, b): ``y_b = snap(y_a + M_ab(y_a))``, scored on the score
    map; the walk back along (b, a) must land within ``radius`` of ``y_a``, else the score
    is 0 (``y_b`` is someone else's keypoint). b is found when it scores ``>= threshold``.
    Each edge is tried once per person (``poses.tried``, also across calls); when several
    edges reach one b in a step the best try wins.
    """
    src, dst, reverse = edge_arrays(skeleton)
    xy, score, found, tried = poses.xy.copy(), poses.score.copy(), poses.found.copy(), poses.tried.copy()
    stride = maps.snap.stride
    while True:
        n, e = np.nonzero(found[:, src] & ~found[:, dst] & ~tried)
        if n.size == 0:
            break
        tried[n, e] = True
        a, b = src[e], dst[e]
        ya = xy[n, a]
        yb = maps.snap(ya + Bilinear(ya, maps.mid.shape, stride).pairs(maps.mid, e), b)
        at_yb = Bilinear(yb, maps.mid.shape, stride)
        sc = at_yb(maps.score_map, b)
        back = maps.snap(yb + at_yb.pairs(maps.mid, reverse[e]), a)
        sc = np.where(sqnorm(back - ya) <= radius * radius, sc, np.float32(0))
        n, b, yb, sc = _best_per_keypoint(n, b, yb, sc, skeleton.num_keypoints)
        ok = sc >= threshold
        xy[n, b] = yb
        score[n, b] = np.where(ok, sc, 0)
        found[n, b] = ok
    return Poses(xy, score, found, poses.seed, tried)


def _best_per_keypoint(n: np.ndarray, b: np.ndarray, yb: np.ndarray, sc: np.ndarray,
                       k: int) -> tuple[np.ndarray, ...]:
    """Of tries reaching the same (row n, keypoint b), the highest-scoring one (ties: the
    last, i.e. the larger edge index, as tries come in edge order within a row)."""
    key = n * k + b
    if np.bincount(key).max() == 1:
        return n, b, yb, sc
    order = np.lexsort((sc, key))
    last = order[np.r_[key[order][1:] != key[order][:-1], True]]
    return n[last], b[last], yb[last], sc[last]
