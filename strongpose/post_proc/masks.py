"""Instance masks and boxes (docs/DECODER.md §7).

Every body cell embeds as ``p + L_k(p)`` per keypoint type and joins the person whose
found keypoints are nearest on average; the labels are upsampled once to the original
image. A person's box covers its mask and found keypoints.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from scipy import ndimage

from strongpose.geometry import ImageTransform

Extent = Optional[tuple[int, int, int, int]]      # x0, y0, x1, y1 (inclusive) of a mask


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
    if not -1e6 < emb.min() <= emb.max() < 1e6:
        # Far enough to join nobody, small enough that squares do not overflow.
        emb = np.clip(emb, -1e6, 1e6)
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
                   body_threshold: float) -> tuple[list[np.ndarray], list[Extent]]:
    """Per-person bool masks (H, W) in original pixels from the map-resolution labels,
    and each mask's extent ``(x0, y0, x1, y1)`` (inclusive; None when empty).

    Body probability is upsampled bilinearly and thresholded; the person label comes from
    the nearest map cell (labels grown by one cell so body edges keep their owner). One
    label image is upsampled for everyone, and each person's mask is filled only inside
    that person's pixel box, so the cost is about one image area, not one per person.
    """
    height, width = size
    grown = _grow_labels(labels)
    masks = list(np.zeros((num_people, height, width), bool))   # one allocation, zero pages until written
    extents: list[Extent] = [None] * num_people
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


def boxes(extents: list[Extent], kps: np.ndarray) -> list[tuple[float, float, float, float]]:
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


