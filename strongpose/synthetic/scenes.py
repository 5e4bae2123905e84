"""One generated image: background, crowd, people placed so that each stays decodable,
and its annotations."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .figures import Figure, draw_background, draw_figure, random_figure
from .options import K, MIN_PERSON_PX, MIN_SEPARATION, MIN_VISIBLE, PLACE_TRIES, SynthOptions


# --------------------------------------------------------------------- one image
@dataclass
class SynthPerson:
    """A drawn person (or crowd region) of an image with its annotation (no ids yet)."""

    annotation: dict[str, Any]
    mask: np.ndarray                 # (H, W) uint8: the visible drawn pixels
    keypoints: np.ndarray            # (K, 3) float32 as written (x, y, v)


@dataclass
class SynthImage:
    """One rendered image (BGR uint8) and what is in it, in drawing order (crowd first)."""

    image: np.ndarray
    people: list[SynthPerson] = field(default_factory=list)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image ``index`` (0-based) of ``split`` for ``seed``."""
    return np.random.default_rng(
        [int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode("utf-8")), int(index)])


def _visible_keypoint_flags(fig: Figure, own: int, owner: np.ndarray) -> np.ndarray:
    """(K,) v for a figure whose drawn pixels carry ``own`` in ``owner`` (after everything)."""
    h, w = owner.shape
    v = np.zeros(K, np.float32)
    for k, (x, y) in enumerate(fig.joints):
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            continue
        o = owner[int(round(y)), int(round(x))]
        v[k] = 2 if o == own else 1
        if fig.back_view and k in (0, 1, 2):
            v[k] = 1
    return v


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons whose pycocotools rasterisation is exactly ``mask``.

    Outlines are traced on the mask upsampled x2, so that their vertices fall on pixel
    edges; a hole is spliced into its outline through a zero-width cut (a "keyhole"), which
    pycocotools' even-odd rasterisation leaves out, so holes stay holes.
    """
    up = cv2.resize(mask, (mask.shape[1] * 2, mask.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    contours = [cv2.approxPolyDP(c, 0.5, True).reshape(-1, 2) for c in contours]
    polys = []
    for i, outline in enumerate(contours):
        if hierarchy[i][3] != -1:                    # a hole: spliced into its parent below
            continue
        poly, child = outline, hierarchy[i][2]
        while child != -1:
            hole = contours[child]
            d = ((poly[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
            a, b = np.unravel_index(int(np.argmin(d)), d.shape)
            poly = np.concatenate([poly[:a + 1], hole[b:], hole[:b + 1], poly[a:]])
            child = hierarchy[child][0]
        if len(poly) >= 3:
            polys.append([float(v) / 2 for v in poly.reshape(-1)])
    polys.sort(key=len, reverse=True)  # never a 4-number polygon first (pycocotools: a box)
    return polys


def _rle_of_polygons(polys: list[list[float]], h: int, w: int) -> dict:
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = np.asarray(mask, np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _figure_mask(fig: Figure, size: tuple[int, int]) -> np.ndarray:
    scratch = np.zeros(size + (3,), np.uint8)
    m = np.zeros(size, np.uint8)
    draw_figure(scratch, m, fig)
    return m


def render_image(seed: int, index: int, options: SynthOptions = SynthOptions(),
                 split: str = "train") -> SynthImage:
    """Draw image ``index`` of ``split`` (deterministic for the arguments)."""
    rng = image_rng(seed, split, index)
    h, w = options.size
    side = min(h, w)
    canvas = draw_background(rng, (h, w))
    owner = np.zeros((h, w), np.int16)       # 0 background, -1 crowd, i + 1 person i
    out = SynthImage(image=canvas)
    if rng.random() < options.empty_rate:
        return out

    # Crowd: small figures in a cluster, drawn first (behind everyone).
    crowd_fig_mask = None
    if rng.random() < options.crowd_rate:
        crowd_fig_mask = np.zeros((h, w), np.uint8)
        n = int(rng.integers(5, 13))
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.3, 0.8) * h
        spread = rng.uniform(0.12, 0.25) * side
        small = rng.uniform(0.12, 0.2) * side
        pts = sorted(((cx + rng.normal(0, spread), cy + rng.normal(0, spread * 0.4))
                      for _ in range(n)), key=lambda p: p[1])
        for x, y in pts:
            fig = random_figure(rng, small * rng.uniform(0.85, 1.15), (x, y))
            draw_figure(canvas, crowd_fig_mask, fig)
        owner[crowd_fig_mask > 0] = -1

    # People, in drawing order.
    lo, hi = options.people
    n_people = int(rng.integers(lo, hi + 1))
    figs: list[Figure] = []
    masks: list[np.ndarray] = []               # full drawings
    annotated: list[bool] = []
    hlo, hhi = options.heights
    for _ in range(n_people):
        mask_only = bool(rng.random() < options.mask_only_rate)
        overlap = bool(figs) and rng.random() < options.overlap_rate
        for _ in range(PLACE_TRIES):
            height = rng.uniform(hlo, hhi) * side
            if overlap:
                other = figs[int(rng.integers(len(figs)))]
                ox, oy = (other.joints[11] + other.joints[12]) / 2
                dx = rng.choice([-1, 1]) * rng.uniform(0.12, 0.3) * height
                centre = (ox + dx, oy + rng.uniform(-0.1, 0.15) * height)
            else:
                centre = (rng.uniform(0.08, 0.92) * w,
                          rng.uniform(0.4 * height, h - 0.35 * height))
            fig = random_figure(rng, height, centre, back_view_rate=options.back_view_rate)
            m = _figure_mask(fig, (h, w))
            if m.sum() < MIN_PERSON_PX:
                continue
            if not overlap and any((m & mm).any() for mm in masks):
                continue
            if not _fits(fig, m, mask_only, figs, masks, annotated, owner):
                continue
            break
        else:
            continue
        canvas_mask = np.zeros((h, w), np.uint8)
        draw_figure(canvas, canvas_mask, fig)
        owner[canvas_mask > 0] = len(figs) + 1
        figs.append(fig)
        masks.append(canvas_mask)
        annotated.append(not mask_only)

    if crowd_fig_mask is not None:
        region = cv2.morphologyEx(crowd_fig_mask, cv2.MORPH_CLOSE,
                                  cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        region = (region > 0) & (owner <= 0)
        region = region.astype(np.uint8)
        if region.sum() >= MIN_PERSON_PX:
            rle = uncompressed_rle(region)
            enc = mask_utils.frPyObjects(rle, h, w)
            ann = {"iscrowd": 1, "keypoints": [0] * (3 * K), "num_keypoints": 0,
                   "segmentation": rle, "area": float(mask_utils.area(enc)),
                   "bbox": [float(v) for v in mask_utils.toBbox(enc)]}
            out.people.append(SynthPerson(ann, region, np.zeros((K, 3), np.float32)))

    for i, (fig, is_annotated) in enumerate(zip(figs, annotated)):
        visible = (owner == i + 1).astype(np.uint8)
        polys = _polygons(visible)
        if not polys:
            continue
        rle = _rle_of_polygons(polys, h, w)
        kps = np.zeros((K, 3), np.float32)
        if is_annotated:
            v = _visible_keypoint_flags(fig, i + 1, owner)
            v[(v > 0) & (rng.random(K) < options.unlabelled_rate)] = 0
            kps[:, :2] = np.round(fig.joints, 2)
            kps[:, 2] = v
            kps[v == 0] = 0
        ann = {"iscrowd": 0,
               "keypoints": [float(x) if n % 3 < 2 else int(x)
                             for n, x in enumerate(kps.reshape(-1))],
               "num_keypoints": int(np.count_nonzero(kps[:, 2] > 0)),
               "segmentation": [[round(c, 1) for c in poly] for poly in polys],
               "area": float(mask_utils.area(rle)),
               "bbox": [float(v) for v in mask_utils.toBbox(rle)]}
        out.people.append(SynthPerson(ann, visible, kps))
    return out


def _fits(fig: Figure, m: np.ndarray, mask_only: bool, figs: list[Figure],
          masks: list[np.ndarray], annotated: list[bool], owner: np.ndarray) -> bool:
    """Whether drawing ``fig`` (drawing ``m``) now keeps everyone drawn before decodable."""
    for idx, (other, om, ann) in enumerate(zip(figs, masks, annotated), start=1):
        own = om.sum()
        if own == 0:
            continue
        # What of ``other`` stays visible: its drawing, minus what later people covered, minus m.
        still = np.count_nonzero((owner == idx) & (m == 0))
        if still < MIN_VISIBLE * own:
            return False
        if ann and not mask_only:
            d = np.linalg.norm(fig.joints - other.joints, axis=1)
            if (d < MIN_SEPARATION).any():
                return False
    return True
