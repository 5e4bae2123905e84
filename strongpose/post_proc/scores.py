"""Person scores: PersonLab's soft keypoint-NMS (docs/DECODER.md §6)."""

from __future__ import annotations

import numpy as np

from .sampling import sqnorm


def soft_nms_scores(xy: np.ndarray, scores: np.ndarray, nms_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """PersonLab soft keypoint-NMS person scores.

    ``xy`` (P, K, 2), ``scores`` (P, K) (0 for keypoints not found). People are ranked by
    their total keypoint score (ties: input order); a keypoint counts unless a better
    person has the same keypoint, with score > 0, within ``nms_radius``. Returns
    (person scores (P,): counted keypoint scores summed, over K; the ranking used (P,)).
    A one-keypoint fragment thus scores far below a whole person.
    """
    p, k = scores.shape
    order = np.argsort(-scores.sum(axis=1), kind="stable")
    xy, sc = xy[order], scores[order]
    close = sqnorm(xy[:, None] - xy[None]) <= nms_radius * nms_radius          # (P, P, K)
    better = np.tri(p, k=-1, dtype=bool).T[:, :, None]                           # [q, p]: q ranks above p
    suppressed = (close & better & (sc[:, None] > 0)).any(axis=0)
    out = np.empty(p, np.float64)
    out[order] = (sc * ~suppressed).sum(axis=1) / k
    return out, order


def rank_people(person_scores: np.ndarray, *, min_score: float, max_people: int) -> np.ndarray:
    """Indices of the people to return, best score first (ties: input order): score > 0
    and ``>= min_score``, at most ``max_people``."""
    keep = np.flatnonzero((person_scores > 0) & (person_scores >= min_score))
    return keep[np.argsort(-person_scores[keep], kind="stable")][:max_people]
