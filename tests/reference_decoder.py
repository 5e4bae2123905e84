"""The plain reference decoder: docs/DECODER.md §1-§6 (and the clipping of §7), one step at a time.

    people = reference_decode(maps, skeleton, stride, disk_radius, cfg)
    for keypoints, score in people:      # keypoints (K, 3): x, y, score in input pixels
        ...

Written straight from the page, for ``tests/test_decoder_equivalence.py`` to hold the
fast decoder (``strongpose.post_proc``) to: one priority queue of candidates, one person
walked at a time, every point sampled on its own. Slow on purpose and short enough to
check line by line against the page. Whole-map steps (Hough voting, the 3x3 box sum,
local maxima) use NumPy/SciPy; everything after them works on Python floats (float64)
read from the maps as nested lists. No input checks (§0), no masks or boxes (§7), no
image transform: the original image is the input image ``[0, s(w-1)] x [0, s(h-1)]``.

Where the page leaves room, this reads it so:
- §1: a snap clamps the point into the image even with ``snap_steps = 0``;
- §4: "within r" is ``<= r^2`` as everywhere; the walked vote is there even when q was
  not found (weight 0: it can still win on support, and q is then not found, at its
  position); supports are float64 sums: the ``1e-3 x own weight`` term that separates
  votes in one cluster is far below float32 rounding of a sum of several weights.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from strongpose.config import DecoderConfig
from strongpose.skeleton import Skeleton


# ------------------------------------------------------------------ §1 sampling
class Maps:
    """One image's maps as nested lists ``a[i][j][c]`` (Python floats), and its geometry."""

    def __init__(self, maps: Mapping[str, np.ndarray], stride: int, score: np.ndarray,
                 with_long_range: bool) -> None:
        heat = np.asarray(maps["heatmap"], np.float64)
        self.s = float(stride)
        self.h, self.w = heat.shape[:2]
        self.heat = heat.tolist()
        self.short = np.asarray(maps["short"], np.float64).tolist()
        self.mid = np.asarray(maps["mid"], np.float64).tolist()
        self.score = np.asarray(score, np.float64).tolist()
        if with_long_range:
            body = np.asarray(maps["body"], np.float64)
            self.body = body.tolist()
            self.long_body = (np.asarray(maps["long"], np.float64) * body).tolist()   # L_k(c) body(c)


def corners(m: Maps, x: float, y: float) -> list[tuple[int, int, float]]:
    """§1 bilinear sample: the 4 corner cells ``(i, j)`` of point ``(x, y)`` and their weights.

    Points off the map read its border; along an axis of size 1 the ``+1`` is dropped.
    """
    u = min(max(x / m.s, 0.0), m.w - 1.0)
    v = min(max(y / m.s, 0.0), m.h - 1.0)
    j0 = min(math.floor(u), max(m.w - 2, 0))
    i0 = min(math.floor(v), max(m.h - 2, 0))
    fx, fy = u - j0, v - i0
    j1 = j0 + 1 if m.w > 1 else j0
    i1 = i0 + 1 if m.h > 1 else i0
    return [(i0, j0, (1 - fx) * (1 - fy)), (i0, j1, fx * (1 - fy)),
            (i1, j0, (1 - fx) * fy), (i1, j1, fx * fy)]


def sample(m: Maps, a: list, c: int, x: float, y: float) -> float:
    """§1: channel ``c`` of map ``a`` at ``(x, y)``, bilinear."""
    return sum(wt * a[i][j][c] for i, j, wt in corners(m, x, y))


def sample_pair(m: Maps, a: list, c: int, x: float, y: float) -> tuple[float, float]:
    """§1: the (dx, dy) pair ``c`` (channels 2c, 2c+1) of map ``a`` at ``(x, y)``, bilinear."""
    cells = corners(m, x, y)
    return (sum(wt * a[i][j][2 * c] for i, j, wt in cells),
            sum(wt * a[i][j][2 * c + 1] for i, j, wt in cells))


def snap(m: Maps, x: float, y: float, k: int, steps: int) -> tuple[float, float]:
    """§1 snap of point ``(x, y)`` of keypoint type ``k``, ``steps`` times, then clamped.

    Each step: over the 4 corner cells c, ``H = sum w_c heat_k(c)`` and
    ``V = sum w_c heat_k(c) (p_c + S_k(c))``; ``y <- V / H`` if ``H > 1e-6``.
    """
    for _ in range(steps):
        hh = vx = vy = 0.0
        for i, j, wt in corners(m, x, y):
            hw = wt * m.heat[i][j][k]
            hh += hw
            vx += hw * (m.s * j + m.short[i][j][2 * k])
            vy += hw * (m.s * i + m.short[i][j][2 * k + 1])
        if hh > 1e-6:
            x, y = vx / hh, vy / hh
    return min(max(x, 0.0), m.s * (m.w - 1)), min(max(y, 0.0), m.s * (m.h - 1))


def dist2(p: tuple[float, float] | list[float], q: tuple[float, float] | list[float]) -> float:
    return (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2


# ------------------------------------------------------- §2 voting and candidates
def hough(heatmap: np.ndarray, short: np.ndarray, stride: int,
          disk_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """§2.1: the strong map and the score map, both (h, w, K) float64.

    Every cell p with ``heat_k(p) > 0`` votes for ``p + S_k(p)`` (map cells, clamped to
    ``[-1, w] x [-1, h]``) with weight ``heat_k(p)``, splatted bilinearly onto the 4 cells
    around it (off the map: dropped); the sum over ``pi (R/s)^2`` is the strong map. The
    score map is its 3x3 box sum, zeros outside.
    """
    heat = np.asarray(heatmap, np.float64)
    short = np.asarray(short, np.float64)
    h, w, num_k = heat.shape
    i, j, k = np.nonzero(heat > 0)
    weight = heat[i, j, k]
    tx = np.clip(j + short[i, j, 2 * k] / stride, -1.0, w)
    ty = np.clip(i + short[i, j, 2 * k + 1] / stride, -1.0, h)
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = tx - x0, ty - y0
    votes = np.zeros((h, w, num_k))
    for di, dj, share in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                          (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        ti, tj = y0.astype(int) + di, x0.astype(int) + dj
        on = (ti >= 0) & (ti < h) & (tj >= 0) & (tj < w)
        np.add.at(votes, (ti[on], tj[on], k[on]), (weight * share)[on])
    # The box sum before the division by the area: the same numbers, but on exact maps
    # (keypoints on whole or quarter pixels, so every share is a multiple of 1/(4s)^2) equal
    # scores come out as equal floats, and the raster-order rule decides their ties, not
    # rounding.
    padded = np.pad(votes, ((1, 1), (1, 1), (0, 0)))
    box = sum(padded[di:di + h, dj:dj + w] for di in range(3) for dj in range(3))
    area = math.pi * (disk_radius / stride) ** 2
    return votes / area, box / area


@dataclass
class Candidate:
    x: float
    y: float
    k: int
    score: float
    peak: float          # the strong map at the cell (ties in score: the sharper peak first)


def candidates(strong: np.ndarray, score: np.ndarray, short: np.ndarray, stride: int,
               cfg: DecoderConfig) -> list[Candidate]:
    """§2.2-§2.3: the candidates, best first, capped and de-duplicated.

    Cells with ``strong >= t``, ``strong > 0`` and ``strong`` equal to its 3x3 maximum
    (per type, zeros outside); position ``(s j, s i) + S_k(i, j)``, score ``score_k(i, j)``;
    best score first, then the sharper peak (higher ``strong``), then raster order
    ``(i, j, k)``. Then the first
    ``max_candidates_per_type`` of each type; of those, per type only the first of those
    whose positions round (half to even) to the same quarter pixel; of those, the first
    ``max_candidates``.
    """
    top = ndimage.maximum_filter(strong, size=(3, 3, 1), mode="constant", cval=0.0)
    peak = (strong >= cfg.peak_threshold) & (strong > 0) & (strong == top)
    found = []
    for i, j, k in zip(*np.nonzero(peak)):                     # raster order (i, j, k)
        found.append(Candidate(x=stride * float(j) + float(short[i, j, 2 * k]),
                               y=stride * float(i) + float(short[i, j, 2 * k + 1]),
                               k=int(k), score=float(score[i, j, k]),
                               peak=float(strong[i, j, k])))
    found.sort(key=lambda c: (-c.score, -c.peak))              # stable: then raster order
    per_type: dict[int, int] = {}
    capped = []
    for c in found:
        per_type[c.k] = per_type.get(c.k, 0) + 1
        if per_type[c.k] <= cfg.max_candidates_per_type:
            capped.append(c)
    seen: set[tuple[int, int, int]] = set()
    out = []
    for c in capped:
        quarter = (c.k, round(c.x * 4), round(c.y * 4))         # Python's round: half to even
        if quarter not in seen:
            seen.add(quarter)
            out.append(c)
    return out[:cfg.max_candidates]


# ------------------------------------------------------------------- §3 the walk
@dataclass
class Pose:
    """A person being decoded: ``xy`` K x [x, y], ``score`` (K), ``found`` (K), seed type,
    and the directed edges tried so far (each at most once per person)."""

    xy: list[list[float]]
    score: list[float]
    found: list[bool]
    seed: int
    tried: list[bool]


def walk(m: Maps, pose: Pose, skeleton: Skeleton, cfg: DecoderConfig) -> None:
    """§3: breadth-first walk from the found keypoints into the missing ones, in place.

    A level takes every directed edge ``e = (a, b)`` not tried yet for this person with
    ``found[a]`` and not ``found[b]``: ``y_b = snap(xy[a] + M_e(xy[a]), b)``, scored on the
    score map; scored 0 if ``snap(y_b + M_rev(e)(y_b), a)`` lands farther than r from
    ``xy[a]``. Per b the best try wins (ties: the larger edge index); ``found[b] = sc >= t``.
    """
    edges = skeleton.directed_edges
    num_e = skeleton.num_edges
    r2 = cfg.nms_radius ** 2
    tried = pose.tried
    while True:
        level = [e for e, (a, b) in enumerate(edges)
                 if pose.found[a] and not pose.found[b] and not tried[e]]
        if not level:
            return
        best: dict[int, tuple[float, float, float]] = {}       # b -> (sc, x, y)
        for e in level:                                        # increasing edge index
            tried[e] = True
            a, b = edges[e]
            xa, ya = pose.xy[a]
            dx, dy = sample_pair(m, m.mid, e, xa, ya)
            xb, yb = snap(m, xa + dx, ya + dy, b, cfg.snap_steps)
            sc = sample(m, m.score, b, xb, yb)
            rev = e + num_e if e < num_e else e - num_e
            dx, dy = sample_pair(m, m.mid, rev, xb, yb)
            back = snap(m, xb + dx, yb + dy, a, cfg.snap_steps)
            if dist2(back, (xa, ya)) > r2:
                sc = 0.0
            if b not in best or sc >= best[b][0]:              # a tie goes to the later edge
                best[b] = (sc, xb, yb)
        for b, (sc, xb, yb) in best.items():
            pose.xy[b] = [xb, yb]
            pose.found[b] = sc >= cfg.peak_threshold
            pose.score[b] = sc if pose.found[b] else 0.0


# --------------------------------------------------------- §4 long-range completion
def long_range(m: Maps, k: int, x: float, y: float) -> tuple[float, float, float]:
    """§4: ``L_k`` at ``(x, y)`` (bilinear of ``L_k body`` over ``max(body, 1e-6)``), and ``body``."""
    body = sample(m, m.body, 0, x, y)
    lx, ly = sample_pair(m, m.long_body, k, x, y)
    d = max(body, 1e-6)
    return lx / d, ly / d, body


def complete(m: Maps, pose: Pose, cfg: DecoderConfig) -> None:
    """§4: re-decide every keypoint type but the seed's from long-range votes, in place.

    Per target q: the walked vote (slot q) and one vote from each found source j != q
    (slot j), each with a position, an effective score and a weight; the vote with the
    most support (weights within r, plus 1e-3 x its own) wins, ties to the lowest slot.
    Every target is decided from the walked person; the caller resumes the walk (§3).
    """
    num_k = len(pose.xy)
    r2 = cfg.nms_radius ** 2
    decided: dict[int, tuple[float, float, float]] = {}
    for q in range(num_k):
        if q == pose.seed:
            continue
        votes = []                                             # (x, y, effective score, weight), by slot
        for j in range(num_k):
            if j == q:
                walked = pose.score[q] if pose.found[q] else 0.0
                votes.append((pose.xy[q][0], pose.xy[q][1], walked, walked))
            elif pose.found[j]:
                xj, yj = pose.xy[j]
                lx, ly, body_j = long_range(m, q, xj, yj)
                vx, vy = snap(m, xj + lx, yj + ly, q, cfg.snap_steps)
                sv = sample(m, m.score, q, vx, vy)
                bx, by, body_v = long_range(m, j, vx, vy)
                back = snap(m, vx + bx, vy + by, j, cfg.snap_steps)
                if dist2(back, (xj, yj)) <= r2:
                    check = 1.0
                elif body_v < cfg.body_threshold:              # off the body: cannot be checked
                    check = cfg.unchecked_vote_weight
                else:
                    check = 0.0
                weight = sv * min(body_j, 1.0) * check
                votes.append((vx, vy, sv if weight > 0 else 0.0, weight))
        if not any(v[2] > 0 for v in votes):
            continue                                           # q stays as walked
        best, best_support = None, -math.inf
        for v in votes:                                        # slot order: a tie keeps the lower slot
            support = sum(u[3] for u in votes if dist2(u, v) <= r2) + 1e-3 * v[3]
            if support > best_support:
                best, best_support = v, support
        decided[q] = best[:3]
    for q, (x, y, sc) in decided.items():
        pose.xy[q] = [x, y]
        pose.found[q] = sc >= cfg.peak_threshold
        pose.score[q] = sc if pose.found[q] else 0.0


# ------------------------------------------------------------------- §5 seeding
def seed_people(m: Maps, cands: list[Candidate], skeleton: Skeleton,
                cfg: DecoderConfig) -> list[Pose]:
    """§5: candidates from one priority queue, best first; each not within r of the same
    keypoint type found in a person already kept seeds a person: walk (§3), then, with
    ``use_long_range``, completion (§4) and the walk resumed. At most ``max_people``."""
    num_k = skeleton.num_keypoints
    r2 = cfg.nms_radius ** 2
    queue = [(-c.score, n) for n, c in enumerate(cands)]      # n: rank, so ties keep the order
    heapq.heapify(queue)
    people: list[Pose] = []
    while queue and len(people) < cfg.max_people:
        _, n = heapq.heappop(queue)
        c = cands[n]
        if any(p.found[c.k] and dist2(p.xy[c.k], (c.x, c.y)) <= r2 for p in people):
            continue
        pose = Pose(xy=[[c.x, c.y] for _ in range(num_k)], score=[0.0] * num_k,
                    found=[False] * num_k, seed=c.k, tried=[False] * len(skeleton.directed_edges))
        pose.score[c.k], pose.found[c.k] = c.score, True
        walk(m, pose, skeleton, cfg)
        if cfg.use_long_range:
            complete(m, pose, cfg)
            walk(m, pose, skeleton, cfg)                       # only edges not tried yet
        people.append(pose)
    return people


# -------------------------------------------------------------- §6 person scores
def person_scores(people: list[Pose], cfg: DecoderConfig) -> list[float]:
    """§6 soft keypoint-NMS: people ranked by the sum of their keypoint scores (ties: seeding
    order); keypoint k counts unless a better-ranked person has keypoint k with score > 0
    within r. Person score = sum of counted keypoint scores / K, in seeding order."""
    r2 = cfg.nms_radius ** 2
    rank = sorted(range(len(people)), key=lambda n: -sum(people[n].score))   # stable
    out = [0.0] * len(people)
    for pos, n in enumerate(rank):
        p = people[n]
        counted = 0.0
        for k in range(len(p.xy)):
            if not any(people[b].score[k] > 0 and dist2(people[b].xy[k], p.xy[k]) <= r2
                       for b in rank[:pos]):
                counted += p.score[k]
        out[n] = counted / len(p.xy)
    return out


# --------------------------------------------------------------------- decoding
def reference_decode(maps: Mapping[str, np.ndarray], skeleton: Skeleton, stride: int,
                     disk_radius: float, cfg: DecoderConfig) -> list[tuple[np.ndarray, float]]:
    """docs/DECODER.md §1-§6 on one image's maps: ``[(keypoints (K, 3), person score)]``.

    Keypoints are x, y, score in input pixels, clipped into the input image (§7 with no
    transform); score 0 means not found. People scoring <= 0 or below
    ``min_person_score`` are dropped; the rest come best first, ties in seeding order.
    """
    strong, score = hough(maps["heatmap"], maps["short"], stride, disk_radius)
    cands = candidates(strong, score, np.asarray(maps["short"], np.float64), stride, cfg)
    m = Maps(maps, stride, score, cfg.use_long_range)
    people = seed_people(m, cands, skeleton, cfg)
    scores = person_scores(people, cfg)
    keep = [n for n in range(len(people))
            if scores[n] > 0 and scores[n] >= cfg.min_person_score]
    keep.sort(key=lambda n: -scores[n])                        # stable: ties in seeding order
    out = []
    for n in keep:
        kp = np.array([[x, y, sc] for (x, y), sc in zip(people[n].xy, people[n].score)])
        kp[:, 0] = np.clip(kp[:, 0], 0.0, stride * (m.w - 1))
        kp[:, 1] = np.clip(kp[:, 1], 0.0, stride * (m.h - 1))
        out.append((kp, scores[n]))
    return out
