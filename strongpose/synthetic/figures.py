"""Drawn people (a random plausible pose, drawn with OpenCV) and backgrounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from .options import K, _ONE, _SHIFT


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
                  colours: Optional[dict[str, tuple[int, int, int]]] = None,
                  back_view_rate: float = 0.25) -> Figure:
    """A random plausible pose of ``height`` pixels whose hips' midpoint is near ``centre``.

    Body units: 1 = standing height (head top to ankle), x right, y down, the person facing
    the camera (its left on the image's right) unless seen from behind (at ``back_view_rate``).
    """
    u = np.array
    back = bool(rng.random() < back_view_rate)
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
    sleeves = rng.random()                   # long 40 %, short 35 % (bare forearm), none 25 %
    hair = tuple(int(v) for v in rng.integers(0, 90, 3))
    return {"skin": skin, "shirt": shirt, "trousers": trousers, "hair": hair,
            "upper_arm": skin if sleeves >= 0.75 else shirt,
            "forearm": shirt if sleeves < 0.4 else skin}


def _darker(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The outline shade of a limb colour (a seam or shadow: limbs stay visible in front
    of clothes of their own colour)."""
    return tuple(int(v) * 3 // 5 for v in colour)


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

    def outlined(pairs) -> None:
        """Limbs ``(a, b, colour, width)``: all in a darker shade first, then their fill
        narrower by the outline (the mask keeps the limb's width)."""
        for a, b, colour, width in pairs:
            limb(a, b, _darker(colour), width)
        for a, b, colour, width in pairs:
            _line(canvas, j[a], j[b], colour, max(1.0, width - max(2.0, 0.15 * width)))

    def arm(sh: int, el: int, wr: int) -> None:
        outlined([(sh, el, col["upper_arm"], w["upper_arm"]), (el, wr, col["forearm"], w["forearm"])])
        draw_hand(canvas, mask, j[el], j[wr], w["forearm"], col["skin"])

    def leg(hp: int, kn: int, an: int) -> None:
        outlined([(hp, kn, col["trousers"], w["thigh"]), (kn, an, col["trousers"], w["shin"])])
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
    _line(canvas, fig.neck, fig.head[0], col["skin"], w["neck"])
    _line(mask, fig.neck, fig.head[0], 1, w["neck"])
    draw_head(canvas, mask, fig)


def draw_hand(canvas: np.ndarray, mask: np.ndarray, elbow: np.ndarray, wrist: np.ndarray,
              forearm_width: float, skin: tuple[int, int, int]) -> None:
    """A hand beyond the wrist, along the forearm: an outlined ellipse 1.9 forearm widths
    long and 1.15 wide whose base is at the wrist, so that the wrist is where the forearm
    meets the hand (as in COCO) and the hand tells the arm's free end from the elbow."""
    d = wrist - elbow
    d = d / (np.linalg.norm(d) + 1e-6)
    length, width = 1.9 * forearm_width, 1.15 * forearm_width
    centre = _pt(wrist + d * 0.45 * length)
    angle = math.degrees(math.atan2(d[1], d[0]))
    outer = (int(round(0.55 * length * _ONE)), int(round(0.5 * width * _ONE)))
    edge = max(0.5, 0.1 * width) * _ONE
    inner = (max(1, int(round(outer[0] - edge))), max(1, int(round(outer[1] - edge))))
    cv2.ellipse(canvas, centre, outer, angle, 0, 360, _darker(skin), -1, cv2.LINE_8, _SHIFT)
    cv2.ellipse(canvas, centre, inner, angle, 0, 360, skin, -1, cv2.LINE_8, _SHIFT)
    cv2.ellipse(mask, centre, outer, angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)


def draw_head(canvas: np.ndarray, mask: np.ndarray, fig: Figure) -> None:
    """The head: an ellipse of skin (hair seen from behind) under a cap of hair; facing the
    camera, dark eyes and a darker nose at their keypoints, so that every face keypoint but
    the ears is a visible feature (the ears lie on the head's outline)."""
    (hx, hy), (ax, ay), angle = fig.head
    col, j = fig.colours, fig.joints
    centre, axes = _pt((hx, hy)), (int(round(ax * _ONE)), int(round(ay * _ONE)))
    cv2.ellipse(canvas, centre, axes, angle, 0, 360, col["hair"] if fig.back_view else col["skin"],
                -1, cv2.LINE_8, _SHIFT)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    if fig.back_view:
        return
    # Hair: the part of the outline above a chord at 0.35 of the half-height (head frame).
    t = np.radians(np.arange(180, 361, 10))
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    x, y = ax * np.cos(t), np.minimum(ay * np.sin(t), -0.35 * ay)
    cap = np.stack([hx + x * c - y * s, hy + x * s + y * c], 1)
    cv2.fillPoly(canvas, np.round(cap * _ONE).astype(np.int32)[None], col["hair"], cv2.LINE_8,
                 _SHIFT)
    dot = max(0.8, 0.14 * ax) * _ONE
    for e in (1, 2):
        cv2.circle(canvas, _pt(j[e]), int(round(dot)), (20, 20, 20), -1, cv2.LINE_8, _SHIFT)
    cv2.circle(canvas, _pt(j[0]), int(round(dot)), _darker(col["skin"]), -1, cv2.LINE_8, _SHIFT)


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
