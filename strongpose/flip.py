"""Horizontal flip of ground truth and of maps, driven by the skeleton's flip permutations.

The data pipeline flips keypoints with :func:`flip_keypoints` (and mirrors the image and
masks itself); flip test-time augmentation mirrors predicted maps with :func:`flip_maps`.
Both accept TensorFlow tensors or NumPy arrays and return the same kind.

Map cell column ``j`` of a map ``w`` cells wide is input point ``x = s*j``; mirrored it is
column ``w-1-j``, point ``s*(w-1) - x = (W-1) - x`` for the input width ``W = s*(w-1)+1``,
so both functions describe the same mirror.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import numpy as np

from strongpose import maps
from strongpose.skeleton import Skeleton

# How the channels of each key transform under a flip: strongpose.maps.flip_kind.
#   keypoint: K channels, one per keypoint type (permuted)
#   keypoint_offset: 2K channels (dx, dy) per keypoint type (permuted, dx negated)
#   edge: 2E channels, one per directed edge (permuted)
#   edge_offset: 4E channels (dx, dy) per directed edge (permuted, dx negated)
#   plain: channels that do not depend on left/right (mirrored only)


def _tf(x: Any) -> Any:
    """TensorFlow if ``x`` is one of its tensors, else None (a NumPy-only caller, e.g.
    the Predictor on a JAX-only machine, never imports TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf if tf is not None and isinstance(x, (tf.Tensor, tf.Variable)) else None


def flip_keypoints(keypoints: Any, image_width: Any, skeleton: Skeleton) -> Any:
    """Mirror keypoints ``(..., K, 3)`` (x, y, v) in an image ``image_width`` pixels wide.

    ``x -> image_width - 1 - x`` and keypoint types swap left/right
    (``out[..., i, :] = in[..., perm[i], :]``). Unlabelled rows are flipped too; their
    v stays 0. Returns a tensor for a tensor input, else a NumPy array.
    """
    k = skeleton.num_keypoints
    shape = keypoints.shape
    if len(shape) < 2 or (shape[-2] is not None and shape[-2] != k) or (
            shape[-1] is not None and shape[-1] < 2):
        raise ValueError(f"flip_keypoints: expected (..., {k}, 3) keypoints, got shape {tuple(shape)}")
    perm = list(skeleton.flip_permutation)
    tf = _tf(keypoints)
    if tf is not None:
        kp = tf.gather(keypoints, perm, axis=-2)
        x = tf.cast(image_width, kp.dtype) - 1 - kp[..., :1]
        return tf.concat([x, kp[..., 1:]], axis=-1)
    kp = np.array(np.asarray(keypoints)[..., perm, :], copy=True)
    kp[..., 0] = np.asarray(image_width, kp.dtype) - 1 - kp[..., 0]
    return kp


def _channel_plan(key: str, channels: int, skeleton: Skeleton) -> tuple[list[int], list[float]]:
    """Channel index map and sign per output channel for map ``key``."""
    try:
        kind = maps.flip_kind(key)
    except ValueError as err:
        raise ValueError(f"flip_maps: {err}") from None
    if kind == "plain":
        return list(range(channels)), [1.0] * channels
    perm = (skeleton.flip_permutation if kind.startswith("keypoint")
            else skeleton.directed_edge_flip_permutation)
    if kind.endswith("offset"):
        index = [2 * perm[c // 2] + c % 2 for c in range(2 * len(perm))]
        sign = [-1.0 if c % 2 == 0 else 1.0 for c in range(2 * len(perm))]
    else:
        index, sign = list(perm), [1.0] * len(perm)
    if channels != len(index):
        raise ValueError(f"flip_maps: {key!r} has {channels} channels, the skeleton implies {len(index)}")
    return index, sign


def flip_map(key: str, value: Any, skeleton: Skeleton) -> Any:
    """Mirror one map ``(h, w, C)`` or ``(B, h, w, C)``: columns reversed, channels
    permuted left/right, dx channels negated."""
    rank = len(value.shape)
    if rank not in (3, 4):
        raise ValueError(f"flip_maps: {key!r} must be (h, w, C) or (B, h, w, C), got shape {tuple(value.shape)}")
    index, sign = _channel_plan(key, int(value.shape[-1]), skeleton)
    tf = _tf(value)
    if tf is not None:
        out = tf.gather(tf.reverse(value, axis=[-2]), index, axis=-1)
        return out * tf.constant(sign, out.dtype) if min(sign) < 0 else out
    arr = np.asarray(value)[..., ::-1, :][..., index]
    return arr * np.asarray(sign, arr.dtype) if min(sign) < 0 else arr


def flip_maps(maps: Mapping[str, Any], skeleton: Skeleton) -> dict[str, Any]:
    """Mirror every map of a MAPS.md dict (targets, weights or network outputs)."""
    return {key: flip_map(key, value, skeleton) for key, value in maps.items()}
