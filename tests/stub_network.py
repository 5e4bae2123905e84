"""A stub network for inference tests: its outputs are the exact target maps of the image.

It knows a set of images (by content) and their ground truth; for an input it recognises
(the image itself, or its mirror when ``flip`` is asked) it returns the targets as logits
(probabilities clipped to (eps, 1 - eps)) and offsets; the decoder then sees perfect maps.
Images must be ``s*n + 1`` pixels on each side and run at scale 1 (no resize, no padding).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import tensorflow as tf

from strongpose import maps as map_table
from strongpose.coco import ImageGroundTruth
from strongpose.flip import flip_keypoints
from strongpose.targets import TargetEncoder

EPS = 1e-4


def _key(x: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()


def mirrored(gt: ImageGroundTruth, skeleton) -> ImageGroundTruth:
    """Ground truth of the horizontally mirrored image."""
    kps = flip_keypoints(gt.keypoints, gt.width, skeleton)
    kps[gt.num_people:] = 0
    return dataclasses.replace(
        gt, keypoints=kps.astype(np.float32), person_masks=gt.person_masks[:, :, ::-1].copy(),
        crowd_mask=gt.crowd_mask[:, ::-1].copy(), unannotated_mask=gt.unannotated_mask[:, ::-1].copy())


class TargetsNetwork:
    """``network(images)`` -> the exact maps of each known image, as network outputs."""

    def __init__(self, cfg, stride: int) -> None:
        self.encoder = TargetEncoder.from_config(cfg, stride=stride)
        self.skeleton = cfg.skeleton
        self.known: dict[str, dict[str, np.ndarray]] = {}
        self.calls = 0

    def add(self, image_rgb: np.ndarray, gt: ImageGroundTruth, flip: bool = True) -> None:
        """Teach it an RGB uint8 image (s*n+1 sized) and its ground truth."""
        x = image_rgb.astype(np.float32)
        self.known[_key(x)] = self._outputs(gt)
        if flip:
            self.known[_key(x[:, ::-1])] = self._outputs(mirrored(gt, self.skeleton))

    def _outputs(self, gt: ImageGroundTruth) -> dict[str, np.ndarray]:
        size = self.encoder.map_size_for((gt.height, gt.width))
        t = self.encoder({k: tf.convert_to_tensor(v) for k, v in gt.as_target_inputs().items()},
                         map_size=size)
        out = {}
        for spec in map_table.MAPS:
            v = np.asarray(t[spec.key], np.float32)
            if spec.logits:
                p = np.clip(v, EPS, 1 - EPS)
                v = np.log(p / (1 - p))
            out[spec.output_key] = v
        return out

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        per = [self.known[_key(x)] for x in np.asarray(images, np.float32)]
        return {k: np.stack([p[k] for p in per]) for k in per[0]}
