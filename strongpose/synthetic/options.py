"""Constants and options of the synthetic data set (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from strongpose.skeleton import COCO_KEYPOINT_NAMES

K = len(COCO_KEYPOINT_NAMES)
# COCO's own 19 skeleton pairs (1-based), as person_keypoints_*.json files carry them.
COCO_SKELETON_PAIRS: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
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
        back_view_rate: chance that a person is seen from behind (no face; its left on the
            image's left), which only the head tells apart from a front view.
    """

    size: tuple[int, int] = (257, 257)
    people: tuple[int, int] = (1, 4)
    heights: tuple[float, float] = (0.35, 0.85)
    crowd_rate: float = 0.15
    overlap_rate: float = 0.3
    empty_rate: float = 0.05
    mask_only_rate: float = 0.05
    unlabelled_rate: float = 0.03
    back_view_rate: float = 0.25

    def __post_init__(self) -> None:
        size = size_pair(self.size)
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
                     "unlabelled_rate", "back_view_rate"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
            object.__setattr__(self, name, v)


# Named scene mixes for the command line (``--scenes``): SynthOptions fields that differ
# from the defaults. "simple": the README quick start's data: one or two large people,
# all facing the camera (no back views), rarely overlapping, no crowds, empty images,
# mask-only people or unlabelled keypoints; a small network learns it on a CPU in minutes.
SCENES: dict[str, dict[str, Any]] = {
    "standard": {},
    "simple": {"people": (1, 2), "heights": (0.55, 0.9), "crowd_rate": 0.0,
               "overlap_rate": 0.1, "empty_rate": 0.0, "mask_only_rate": 0.0,
               "unlabelled_rate": 0.0, "back_view_rate": 0.0},
}


SCENE_KEYS: tuple[str, ...] = ("people", "heights", "crowd_rate", "overlap_rate", "empty_rate",
                              "mask_only_rate", "unlabelled_rate", "back_view_rate")


def scene_options(scene: str, **overrides: Any) -> dict[str, Any]:
    """The :class:`SynthOptions` fields of scene mix ``scene`` with the ``overrides`` that are
    not None (keys of ``SCENE_KEYS``); checked by ``SynthOptions`` (ValueError naming the
    field), returned as keyword arguments for :func:`write_splits`."""
    if scene not in SCENES:
        raise ValueError(f"scenes {scene!r}: expected one of {sorted(SCENES)}")
    unknown = set(overrides) - set(SCENE_KEYS)
    if unknown:
        raise ValueError(f"scene options {sorted(unknown)}: expected some of {list(SCENE_KEYS)}")
    out = {**SCENES[scene], **{k: v for k, v in overrides.items() if v is not None}}
    checked = SynthOptions(**out)
    return {k: getattr(checked, k) for k in out}


def size_pair(size: Any) -> tuple[int, int]:
    """``S`` or ``(H, W)`` -> ``(H, W)`` ints."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)
