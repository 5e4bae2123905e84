"""A small synthetic COCO keypoints data set: drawn human-like figures with known answers.

    python -m strongpose.synthetic data/synth --train 200 --val 50 --seed 0 --size 257

    from strongpose.synthetic import write_splits, write_dataset, render_image
    files = write_splits("data/synth", train=200, val=50, seed=0)   # {"train": Path, "val": Path}
    ann = write_dataset("data/synth", split="val", images=20, size=(193, 257), seed=1)

Layout (COCO's own, so ``data.coco_root=data/synth data.train_split=train
data.val_split=val`` points the config at it)::

    OUT/annotations/person_keypoints_<split>.json
    OUT/<split>/000000000001.jpg ...

Each image: a background (a colour gradient, noise, and plain shapes: rectangles, discs,
triangles, thin lines), then perhaps a crowd, then 0..N people drawn in order, each over
the ones before (occlusion order = drawing order). A person is a random pose of a plausible
skeleton (height, position, tilt, limb angles, facing the camera or away, a partly turned
body) drawn with OpenCV without anti-aliasing: legs, torso polygon, arms, neck and a head
ellipse, in the person's own colours. What the person's pixels are is known exactly: its
annotation mask is what stays visible of its drawing after the later people are drawn.

Annotations (``iscrowd`` 0 unless said):
  * person: 17 keypoints at the joints (the face on the head); v = 2 where the person's own
    pixel is on top, v = 1 where a later person covers it (or the face of a person seen from
    behind), v = 0 with x = y = 0 outside the image or, at ``unlabelled_rate``, at random;
    ``segmentation`` polygons traced from the visible mask (pycocotools rasterises them
    back to the same pixels: IoU ~1), ``area`` = pixels of that rasterisation, ``bbox`` its box;
  * person with a mask and no keypoints (``num_keypoints`` 0, at ``mask_only_rate``): an
    ignore region for the heat-map loss;
  * crowd (``iscrowd`` 1, in about ``crowd_rate`` of the non-empty images): a cluster of small
    figures as one uncompressed-RLE region, no keypoints.
Placement keeps every annotated person decodable: a person that would hide more than
``1 - MIN_VISIBLE`` of one drawn before it, or bring a keypoint within ``MIN_SEPARATION``
pixels of the same keypoint of another person, is drawn again elsewhere (or left out).

Deterministic: image ``i`` of split ``s`` with seed ``n`` is drawn from its own random
generator seeded by ``(n, crc32(s), i)``: the same arguments give the same JSON and the same
image bytes; another seed or split gives other images. No TensorFlow here.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from strongpose import cli
from strongpose.skeleton import COCO_KEYPOINT_NAMES

K = len(COCO_KEYPOINT_NAMES)
# COCO's own 19 skeleton pairs (1-based), as person_keypoints_*.json files carry them.
COCO_SKELETON_PAIRS: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
FACE = (0, 1, 2, 3, 4)            # nose, eyes, ears
MIN_VISIBLE = 0.5                 # an earlier person keeps at least this share of its drawing
MIN_SEPARATION = 12.0             # px between the same keypoint of two annotated people
MIN_PERSON_PX = 40                # a person smaller than this (visible pixels) is dropped
PLACE_TRIES = 12
JPEG_QUALITY = 92
_SHIFT = 4                        # OpenCV sub-pixel bits for drawing
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class SynthOptions:
    """What a generated image may hold (every rate is a probability).

    Attributes:
        size: (height, width) of every image.
        people: (min, max) people per non-empty image (crowd figures not counted).
        heights: (min, max) standing height of a person as a share of min(height, width).
        crowd_rate: chance that a non-empty image has a crowd region.
        overlap_rate: chance that a person after the first is placed over one drawn before.
        empty_rate: chance that an image holds nobody (background only).
        mask_only_rate: chance that a person is annotated with a mask but no keypoints.
        unlabelled_rate: chance that a keypoint inside the image is left unlabelled.
    """

    size: tuple[int, int] = (257, 257)
    people: tuple[int, int] = (1, 4)
    heights: tuple[float, float] = (0.35, 0.85)
    crowd_rate: float = 0.15
    overlap_rate: float = 0.3
    empty_rate: float = 0.05
    mask_only_rate: float = 0.05
    unlabelled_rate: float = 0.03

    def __post_init__(self) -> None:
        size = _size_pair(self.size)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "people", tuple(int(v) for v in self.people))
        object.__setattr__(self, "heights", tuple(float(v) for v in self.heights))
        if min(size) < 33 or max(size) > 4096:
            raise ValueError(f"size {size}: each side must be 33..4096 pixels")
        lo, hi = self.people
        if len(self.people) != 2 or not 0 <= lo <= hi <= 32:
            raise ValueError(f"people {self.people}: need 0 <= min <= max <= 32")
        hlo, hhi = self.heights
        if len(self.heights) != 2 or not 0.1 <= hlo <= hhi <= 1.0:
            raise ValueError(f"heights {self.heights}: need 0.1 <= min <= max <= 1")
        for name in ("crowd_rate", "overlap_rate", "empty_rate", "mask_only_rate",
                     "unlabelled_rate"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
            object.__setattr__(self, name, v)


def _size_pair(size: Any) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


# ------------------------------------------------------------------------ figures
@dataclass
class Figure:
    """One drawn figure: keypoints (K, 2) float x, y, its parts and colours."""

    joints: np.ndarray                 # (K, 2) x, y in image pixels
    head: tuple[tuple[float, float], tuple[float, float], float]  # centre, axes, angle (deg)
    neck: np.ndarray                   # (2,)
    widths: dict[str, float]           # limb thicknesses in pixels
    colours: dict[str, tuple[int, int, int]]
    back_view: bool                    # seen from behind: the face is hidden
    far_side: str                      # "left"/"right": the limbs drawn behind the torso


def _direction(degrees: float, outwards: float) -> np.ndarray:
    """Unit vector ``degrees`` from straight down, towards x sign ``outwards``."""
    a = math.radians(degrees)
    return np.array([outwards * math.sin(a), math.cos(a)])


def random_figure(rng: np.random.Generator, height: float, centre: tuple[float, float],
                  colours: Optional[dict[str, tuple[int, int, int]]] = None) -> Figure:
    """A random plausible pose of ``height`` pixels whose hips' midpoint is near ``centre``.

    Body units: 1 = standing height (head top to ankle), x right, y down, the person facing
    the camera (its left on the image's right) unless seen from behind.
    """
    u = np.array
    back = bool(rng.random() < 0.25)
    side = -1.0 if back else 1.0            # +x is the person's left when facing the camera
    turn = float(rng.uniform(0.55, 1.0))     # < 1: the body partly turned (narrower)
    yaw = float(rng.choice([-1.0, 1.0])) * (1.0 - turn)
    sw = rng.uniform(0.10, 0.13) * turn      # shoulder half-width
    hw = rng.uniform(0.065, 0.085) * turn    # hip half-width
    hip_y = rng.uniform(0.50, 0.54)
    sh_y = rng.uniform(0.19, 0.22)
    neck = u([yaw * 0.02, sh_y - 0.02])
    kp = np.zeros((K, 2))
    kp[5] = (side * sw, sh_y)
    kp[6] = (-side * sw, sh_y)
    kp[11] = (side * hw, hip_y)
    kp[12] = (-side * hw, hip_y)
    # Head: centre above the neck, face keypoints on it (shifted towards where it looks).
    rh = rng.uniform(0.065, 0.08)
    head_c = u([yaw * 0.03 + rng.uniform(-0.01, 0.01), sh_y - 0.03 - rh * 1.25])
    fx = yaw * 0.9 * rh
    kp[0] = head_c + (fx * 1.2, rh * 0.25)                       # nose
    kp[1] = head_c + (fx + side * 0.38 * rh, -rh * 0.15)          # left eye
    kp[2] = head_c + (fx - side * 0.38 * rh, -rh * 0.15)          # right eye
    kp[3] = head_c + (fx * 0.3 + side * 0.72 * rh, 0.0)           # left ear
    kp[4] = head_c + (fx * 0.3 - side * 0.72 * rh, 0.0)           # right ear
    # Arms: upper arm from straight down, outwards (+); the elbow bends either way.
    for sh, el, wr, s in ((5, 7, 9, side), (6, 8, 10, -side)):
        up = rng.uniform(0.155, 0.185)
        fore = rng.uniform(0.135, 0.16)
        a1 = rng.uniform(5, 150) if rng.random() < 0.8 else rng.uniform(-20, 5)
        a2 = a1 + rng.uniform(-20, 130) * (1 if rng.random() < 0.7 else -1)
        kp[el] = kp[sh] + _direction(a1, s) * up
        kp[wr] = kp[el] + _direction(a2, s) * fore
    # Legs: thigh from straight down, outwards (+); knee bend backwards (the shin swings in).
    for hp, kn, an, s in ((11, 13, 15, side), (12, 14, 16, -side)):
        thigh = rng.uniform(0.22, 0.25)
        shin = rng.uniform(0.22, 0.25)
        a1 = rng.uniform(-5, 30) if rng.random() < 0.85 else rng.uniform(30, 75)
        a2 = a1 - rng.uniform(0, 50)
        kp[kn] = kp[hp] + _direction(a1, s) * thigh
        kp[an] = kp[kn] + _direction(a2, s) * shin
    # Whole body: tilt about the hips, scale, place.
    tilt = float(rng.normal(0, 8)) if rng.random() < 0.9 else float(rng.uniform(-40, 40))
    pivot = (kp[11] + kp[12]) / 2
    c, s_ = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    rot = u([[c, -s_], [s_, c]])

    def place(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p) - pivot) @ rot.T * height + np.asarray(centre, float)

    joints = place(kp)
    head_axes = (rh * 0.85 * height, rh * height)
    widths = {
        "upper_arm": max(3.0, rng.uniform(0.05, 0.065) * height),
        "forearm": max(3.0, rng.uniform(0.04, 0.055) * height),
        "thigh": max(4.0, rng.uniform(0.075, 0.095) * height),
        "shin": max(3.0, rng.uniform(0.055, 0.07) * height),
        "neck": max(3.0, 0.055 * height),
    }
    if colours is None:
        colours = random_person_colours(rng)
    return Figure(joints=joints, head=(tuple(place(head_c)), head_axes, tilt),
                  neck=place(neck), widths=widths, colours=colours, back_view=back,
                  far_side="right" if rng.random() < 0.5 else "left")


SKIN = ((60, 90, 160), (80, 130, 200), (110, 160, 225), (140, 190, 235), (40, 60, 110))  # BGR


def random_person_colours(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    skin = SKIN[int(rng.integers(len(SKIN)))]
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    trousers = tuple(int(v) for v in rng.integers(0, 200, 3))
    bare_arms = rng.random() < 0.3
    hair = tuple(int(v) for v in rng.integers(0, 90, 3))
    return {"skin": skin, "shirt": shirt, "trousers": trousers,
            "arms": skin if bare_arms else shirt, "hair": hair}


def _pt(p: Sequence[float]) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _line(img: np.ndarray, a, b, colour, width: float) -> None:
    cv2.line(img, _pt(a), _pt(b), colour, max(1, int(round(width))), cv2.LINE_8, _SHIFT)


def draw_figure(canvas: np.ndarray, mask: np.ndarray, fig: Figure) -> None:
    """Draw ``fig`` on ``canvas`` (BGR uint8) and the same pixels as 1 on ``mask`` (uint8)."""
    j, w, col = fig.joints, fig.widths, fig.colours
    far = (5, 7, 9, 11, 13, 15) if (fig.far_side == "left") else (6, 8, 10, 12, 14, 16)

    def limb(a: int, b: int, colour, width: float) -> None:
        _line(canvas, j[a], j[b], colour, width)
        _line(mask, j[a], j[b], 1, width)

    def arm(sh: int, el: int, wr: int) -> None:
        limb(sh, el, col["arms"], w["upper_arm"])
        limb(el, wr, col["arms"], w["forearm"])
        hand = int(round(w["forearm"] * 0.7 * _ONE))
        cv2.circle(canvas, _pt(j[wr]), hand, col["skin"], -1, cv2.LINE_8, _SHIFT)
        cv2.circle(mask, _pt(j[wr]), hand, 1, -1, cv2.LINE_8, _SHIFT)

    def leg(hp: int, kn: int, an: int) -> None:
        limb(hp, kn, col["trousers"], w["thigh"])
        limb(kn, an, col["trousers"], w["shin"])
        foot = j[an] + (j[an] - j[kn]) * 0.12
        _line(canvas, j[an], foot, (30, 30, 30), w["shin"])
        _line(mask, j[an], foot, 1, w["shin"])

    legs = [(11, 13, 15), (12, 14, 16)]
    arms = [(5, 7, 9), (6, 8, 10)]
    legs.sort(key=lambda t: t[0] not in far)
    arms.sort(key=lambda t: t[0] not in far)
    for t in legs:
        leg(*t)
    arm(*arms[0])                                    # the far arm, behind the torso
    # Torso: shoulders widened by the upper-arm width, down to the hips.
    ls, rs, lh, rh = j[5], j[6], j[11], j[12]
    out = (ls - rs) / (np.linalg.norm(ls - rs) + 1e-6) * w["upper_arm"] * 0.5
    hout = (lh - rh) / (np.linalg.norm(lh - rh) + 1e-6) * w["thigh"] * 0.5
    torso = np.array([ls + out, rs - out, rh - hout, lh + hout])
    poly = np.round(torso * _ONE).astype(np.int32)[None]
    cv2.fillPoly(canvas, poly, col["shirt"], cv2.LINE_8, _SHIFT)
    cv2.fillPoly(mask, poly, 1, cv2.LINE_8, _SHIFT)
    _line(canvas, (lh + rh) / 2 - hout, (lh + rh) / 2 + hout, col["trousers"], w["thigh"] * 0.8)
    _line(mask, (lh + rh) / 2 - hout, (lh + rh) / 2 + hout, 1, w["thigh"] * 0.8)
    arm(*arms[1])                                    # the near arm, in front
    # Neck and head.
    (hx, hy), (ax, ay), angle = fig.head
    _line(canvas, fig.neck, (hx, hy), col["skin"], w["neck"])
    _line(mask, fig.neck, (hx, hy), 1, w["neck"])
    centre, axes = _pt((hx, hy)), (int(round(ax * _ONE)), int(round(ay * _ONE)))
    cv2.ellipse(canvas, centre, axes, angle, 0, 360, col["hair"] if fig.back_view else col["skin"],
                -1, cv2.LINE_8, _SHIFT)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    if not fig.back_view:                            # hair on top, eyes as dots
        cv2.ellipse(canvas, centre, axes, angle, 200, 340, col["hair"], -1, cv2.LINE_8, _SHIFT)
        for e in (1, 2):
            cv2.circle(canvas, _pt(j[e]), max(1, int(round(ax * 0.12 * _ONE))), (20, 20, 20), -1,
                       cv2.LINE_8, _SHIFT)


# ---------------------------------------------------------------------- background
def draw_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A BGR uint8 background: gradient, plain shapes, noise."""
    h, w = size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None])
    img = img.astype(np.uint8)
    for _ in range(int(rng.integers(2, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(max(4, min(h, w) // 20), max(5, min(h, w) // 4)))
        if kind == 0:
            cv2.rectangle(img, (cx - r, cy - int(r * rng.uniform(0.3, 1.5))),
                          (cx + r, cy + int(r * rng.uniform(0.3, 1.5))), colour, -1)
        elif kind == 1:
            cv2.circle(img, (cx, cy), r, colour, -1)
        elif kind == 2:
            corners = rng.integers(-2 * r, 2 * r, size=(2, 2))
            pts = np.array([(cx, cy), (cx + corners[0, 0], cy + corners[0, 1]),
                            (cx + corners[1, 0], cy + corners[1, 1])], np.int32)
            cv2.fillPoly(img, pts[None], colour)
        else:
            cv2.line(img, (cx, cy), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour,
                     int(rng.integers(1, 3)))
    sigma = rng.uniform(0, 12)
    if sigma > 1:
        noise = rng.normal(0, sigma, (h, w, 1 if rng.random() < 0.5 else 3))
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    return img


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
            fig = random_figure(rng, height, centre)
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


# ------------------------------------------------------------------------ writing
def category() -> dict[str, Any]:
    """COCO's person category with keypoint names and its 1-based skeleton pairs."""
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO_KEYPOINT_NAMES),
            "skeleton": [list(p) for p in COCO_SKELETON_PAIRS]}


def annotation_path(root: str | Path, split: str) -> Path:
    """``root/annotations/person_keypoints_<split>.json``."""
    return Path(root) / "annotations" / f"person_keypoints_{split}.json"


def write_dataset(root: str | Path, *, split: str = "train", images: int = 200,
                  size: int | tuple[int, int] = 257, people: tuple[int, int] = (1, 4),
                  seed: int = 0, crowd_rate: float = 0.15, overlap_rate: float = 0.3,
                  empty_rate: float = 0.05, mask_only_rate: float = 0.05,
                  unlabelled_rate: float = 0.03, heights: tuple[float, float] = (0.35, 0.85),
                  progress: bool = False) -> Path:
    """Write ``images`` images to ``root/<split>/`` and their COCO keypoints JSON.

    Returns the annotation file, ``root/annotations/person_keypoints_<split>.json``; the
    images are ``root/<split>/<id:012d>.jpg`` (ids 1..images). See :class:`SynthOptions`
    for the arguments.
    """
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    if not split or any(c in split for c in "/\\") or split in (".", "..", "annotations"):
        raise ValueError(f"bad split name {split!r}")
    opts = SynthOptions(size=_size_pair(size), people=tuple(people), heights=tuple(heights),
                        crowd_rate=crowd_rate, overlap_rate=overlap_rate, empty_rate=empty_rate,
                        mask_only_rate=mask_only_rate, unlabelled_rate=unlabelled_rate)
    root = Path(root)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file = annotation_path(root, split)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    h, w = opts.size
    image_entries, anns = [], []
    indices: Any = range(images)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=f"synthetic {split}", unit="img", file=sys.stderr)
    for i in indices:
        image_id = i + 1
        rendered = render_image(seed, i, opts, split)
        name = f"{image_id:012d}.jpg"
        ok, buf = cv2.imencode(".jpg", rendered.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"could not encode {name}")
        (image_dir / name).write_bytes(buf.tobytes())
        image_entries.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for person in rendered.people:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         **person.annotation})
    data = {
        "info": {"description": f"StrongPose synthetic people ({split}, seed {seed})",
                 "version": "1", "year": 2024},
        "licenses": [],
        "images": image_entries,
        "annotations": anns,
        "categories": [category()],
    }
    tmp = ann_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(ann_file)
    return ann_file


def write_splits(root: str | Path, *, train: int = 200, val: int = 50, seed: int = 0,
                 progress: bool = False, **kwargs: Any) -> dict[str, Path]:
    """A ``train`` and a ``val`` split under ``root`` (each its own images: the split name
    is part of every image's seed). ``kwargs`` go to :func:`write_dataset`."""
    return {split: write_dataset(root, split=split, images=n, seed=seed, progress=progress,
                                 **kwargs)
            for split, n in (("train", train), ("val", val))}


# ------------------------------------------------------------------- command line
def _size_arg(text: str) -> tuple[int, int]:
    import argparse
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 33 or max(parts) > 4096:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected S or HxW, each side 33..4096 pixels (e.g. 257 or 193x257)")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _count_arg(text: str) -> int:
    import argparse
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count >= 0")
    return v


def _rate_arg(text: str) -> float:
    import argparse
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a rate in [0, 1]")
    return v


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = cli.ArgumentParser(
        prog="python -m strongpose.synthetic",
        description="Write a small synthetic COCO keypoints data set (train and val splits) "
                    "of drawn people: OUT_DIR/{train,val}/*.jpg and "
                    "OUT_DIR/annotations/person_keypoints_{train,val}.json.")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="where to write (must be empty or new)")
    ap.add_argument("--train", type=_count_arg, default=200, help="train images (default 200)")
    ap.add_argument("--val", type=_count_arg, default=50, help="val images (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=_size_arg, default=(257, 257),
                    help="image size S or HxW in pixels (default 257)")
    ap.add_argument("--people", type=_count_arg, nargs=2, default=(1, 4), metavar=("MIN", "MAX"),
                    help="people per non-empty image (default 1 4)")
    ap.add_argument("--crowd-rate", type=_rate_arg, default=0.15)
    ap.add_argument("--overlap-rate", type=_rate_arg, default=0.3)
    ap.add_argument("--empty-rate", type=_rate_arg, default=0.05)
    ap.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR "
                    "(files of the same names are replaced)")
    args = ap.parse_args(argv)
    if args.people[0] > args.people[1] or args.people[1] > 32:
        ap.error(f"--people {args.people[0]} {args.people[1]}: need MIN <= MAX <= 32")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} is not empty (use --force to write into it)")
    t0 = time.perf_counter()
    files = write_splits(out, train=args.train, val=args.val, seed=args.seed, size=args.size,
                         people=tuple(args.people), crowd_rate=args.crowd_rate,
                         overlap_rate=args.overlap_rate, empty_rate=args.empty_rate,
                         progress=sys.stderr.isatty())
    dt = time.perf_counter() - t0
    for split, path in files.items():
        print(f"{split}: {path}")
    print(f"wrote {args.train + args.val} images in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m strongpose.synthetic"))
