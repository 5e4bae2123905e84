"""Hand-made exact maps (docs/MAPS.md) of known people, built with NumPy, for decoder tests.

    maps = make_maps([person_at(40, 30), person_at(100, 36, missing=(7,))], (41, 31))
"""

from __future__ import annotations

import numpy as np

from strongpose.skeleton import COCO_SKELETON, Skeleton

SK = COCO_SKELETON
K = SK.num_keypoints
STRIDE = 8
R = 32.0

# A standing person, COCO keypoint order, about 60 x 190 px (x, y relative to the top-left).
TEMPLATE = np.array([
    [50, 20], [45, 15], [55, 15], [40, 18], [60, 18],       # nose, eyes, ears
    [30, 50], [70, 50], [25, 85], [75, 85], [22, 120], [78, 120],   # shoulders, elbows, wrists
    [38, 120], [62, 120], [38, 165], [62, 165], [38, 205], [62, 205],  # hips, knees, ankles
], np.float32)


def person_at(x: float, y: float, missing: tuple[int, ...] = ()) -> np.ndarray:
    """(K, 3) keypoints of TEMPLATE shifted by (x, y), v = 0 for ``missing``."""
    kp = np.ones((K, 3), np.float32)
    kp[:, :2] = TEMPLATE + (x, y)
    kp[list(missing), 2] = 0
    return kp


def box_body(kp: np.ndarray, shape: tuple[int, int], margin: float = 12.0,
             stride: int = STRIDE) -> np.ndarray:
    """A rectangular body (h, w) bool around the labelled keypoints."""
    h, w = shape
    pts = kp[kp[:, 2] > 0, :2]
    gy, gx = np.mgrid[0:h, 0:w] * stride
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    return (gx >= lo[0]) & (gx <= hi[0]) & (gy >= lo[1]) & (gy <= hi[1])


def make_maps(people: list[np.ndarray], shape: tuple[int, int],
              bodies: list[np.ndarray] | None = None, skeleton: Skeleton = SK,
              stride: int = STRIDE, radius: float = R) -> dict[str, np.ndarray]:
    """Exact maps (docs/MAPS.md) of ``people`` (each (K, 3) in input pixels) at stride, radius."""
    h, w = shape
    K = skeleton.num_keypoints
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32) * stride
    cell = np.stack([gx, gy], -1)                                          # (h, w, 2)
    maps = {"heatmap": np.zeros((h, w, K), np.float32), "short": np.zeros((h, w, 2 * K), np.float32),
            "mid": np.zeros((h, w, 4 * skeleton.num_edges), np.float32),
            "long": np.zeros((h, w, 2 * K), np.float32), "body": np.zeros((h, w, 1), np.float32)}
    if not people:
        return maps
    kp = np.stack(people)                                                  # (P, K, 3)
    lab = kp[..., 2] > 0
    d2 = ((cell[:, :, None, None] - kp[None, None, :, :, :2]) ** 2).sum(-1)   # (h, w, P, K)
    d2 = np.where(lab[None, None], d2, np.inf)
    nearest = d2.argmin(axis=2)                                            # (h, w, K)
    disk = d2.min(axis=2) <= radius * radius
    maps["heatmap"] = disk.astype(np.float32)
    vec = kp[nearest, np.arange(K), :2] - cell[:, :, None]                 # (h, w, K, 2)
    maps["short"] = np.where(disk[..., None], vec, 0).reshape(h, w, 2 * K)
    for e, (a, b) in enumerate(skeleton.directed_edges):
        pj = nearest[..., a]
        ok = disk[..., a] & lab[pj, b]
        maps["mid"][..., 2 * e:2 * e + 2] = np.where(ok[..., None], kp[pj, b, :2] - cell, 0)
    if bodies is None:
        bodies = [box_body(p, shape, stride=stride) for p in people]
    stack = np.stack(bodies, -1)                                           # (h, w, P)
    maps["body"] = stack.any(-1, keepdims=True).astype(np.float32)
    owner = stack.argmax(-1)
    one = stack.sum(-1) == 1
    lvec = kp[owner, :, :2] - cell[:, :, None]                             # (h, w, K, 2)
    lok = one[..., None] & lab[owner]
    maps["long"] = np.where(lok[..., None], lvec, 0).reshape(h, w, 2 * K)
    return maps


def eight_people() -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Eight people on a 4 x 2 grid, person n missing its first n keypoints: known order."""
    people = [person_at(10 + 90 * i, 20 + 230 * j, missing=tuple(range(i + 4 * j)))
              for i in range(4) for j in range(2)]
    return people, make_maps(people, (61, 51))
