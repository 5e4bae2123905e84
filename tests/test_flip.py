"""Horizontal flip of keypoints and maps: known answers and encode/flip commutation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from strongpose.flip import flip_keypoints, flip_maps
from strongpose.skeleton import Skeleton
from strongpose.targets import build_targets

COCO = Skeleton()
S, H, W = 4, 11, 13                    # stride, map size
IMG_W = S * (W - 1) + 1                # 49 input pixels wide


def test_flip_keypoints_known_answer():
    sk = Skeleton(names=("a", "b", "c"), edges=((0, 1), (1, 2)), flip_pairs=((0, 2),),
                  sigmas=(0.1, 0.1, 0.1))
    kp = np.array([[[1, 2, 2], [5, 6, 1], [9, 10, 0]]], np.float32)   # (P=1, K=3, 3)
    want = np.array([[[49 - 1 - 9, 10, 0], [49 - 1 - 5, 6, 1], [49 - 1 - 1, 2, 2]]], np.float32)
    np.testing.assert_array_equal(flip_keypoints(kp, 49, sk), want)
    got = flip_keypoints(tf.constant(kp[None]), 49, sk)              # batched tensor
    assert isinstance(got, tf.Tensor)
    np.testing.assert_array_equal(got.numpy()[0], want)
    # An involution, and the input array is untouched.
    np.testing.assert_array_equal(flip_keypoints(flip_keypoints(kp, 49, sk), 49, sk), kp)
    assert kp[0, 0, 0] == 1


def test_flip_maps_channels_known_answer():
    sk = COCO
    rng = np.random.default_rng(1)
    maps = {"heatmap": rng.normal(size=(H, W, 17)), "short": rng.normal(size=(H, W, 34)),
            "mid": rng.normal(size=(2, H, W, 64)), "body": rng.normal(size=(H, W, 1))}
    out = flip_maps(maps, sk)
    # left_eye (1) of the flipped map is right_eye (2) of the original, mirrored.
    np.testing.assert_array_equal(out["heatmap"][:, 0, 1], maps["heatmap"][:, W - 1, 2])
    np.testing.assert_array_equal(out["heatmap"][:, 3, 0], maps["heatmap"][:, W - 4, 0])
    np.testing.assert_array_equal(out["short"][:, 0, 2], -maps["short"][:, W - 1, 4])   # dx
    np.testing.assert_array_equal(out["short"][:, 0, 3], maps["short"][:, W - 1, 5])    # dy
    # Directed edge 0 = (nose, left_eye) <- original edge 1 = (nose, right_eye).
    np.testing.assert_array_equal(out["mid"][:, :, 0, 0], -maps["mid"][:, :, W - 1, 2])
    np.testing.assert_array_equal(out["mid"][:, :, 0, 1], maps["mid"][:, :, W - 1, 3])
    np.testing.assert_array_equal(out["body"], maps["body"][:, ::-1])
    # An involution, also for tensors.
    tf_maps = {k: tf.constant(v, tf.float32) for k, v in maps.items()}
    back = flip_maps(flip_maps(tf_maps, sk), sk)
    for key in maps:
        assert isinstance(back[key], tf.Tensor)
        np.testing.assert_allclose(back[key].numpy(), maps[key].astype(np.float32))


def asymmetric_ground_truth():
    """Two overlapping people, one with a mask and one drawn from limbs, a crowd and an
    unannotated region, and missing keypoints: nothing is left/right symmetric."""
    f = 2
    hm, wm = f * (H - 1) + 1, f * (W - 1) + 1
    kp = np.zeros((3, 17, 3), np.float32)
    # Integer coordinates so that x -> IMG_W-1-x is exact.
    kp[0, [0, 1, 2, 5, 6, 7, 9, 11, 12]] = [
        [20, 6, 2], [22, 4, 2], [18, 4, 2], [26, 12, 2], [14, 12, 2], [30, 20, 2],
        [33, 27, 1], [24, 28, 2], [16, 28, 2]]
    kp[1, [0, 2, 4, 6, 8, 12, 14, 16]] = [
        [30, 8, 2], [28, 7, 2], [25, 9, 2], [24, 14, 2], [21, 22, 2], [26, 29, 2],
        [27, 34, 2], [29, 39, 2]]
    kp[2, :3] = [[5, 5, 2], [6, 6, 2], [7, 7, 2]]          # padding: ignored
    masks = np.zeros((3, hm, wm), np.uint8)
    masks[0, 4:60, 20:70] = 1
    crowd = np.zeros((hm, wm), np.uint8)
    crowd[0:10, 0:12] = 1
    unannotated = np.zeros((hm, wm), np.uint8)
    unannotated[40:80, 2:30] = 1
    return {"keypoints": kp, "num_people": np.int32(2), "person_masks": masks,
            "has_mask": np.array([True, False, False]), "crowd_mask": crowd,
            "unannotated_mask": unannotated}


def flip_ground_truth(gt):
    out = dict(gt)
    out["keypoints"] = flip_keypoints(gt["keypoints"], IMG_W, COCO)
    for key in ("person_masks", "crowd_mask", "unannotated_mask"):
        out[key] = gt[key][..., ::-1].copy()
    return out


def encode(gt):
    maps = build_targets(gt, skeleton=COCO, stride=S, map_size=(H, W),
                         disk_radius=10.0, limb_radius=3.0)
    return {k: v.numpy() for k, v in maps.items()}


def test_encode_of_flipped_ground_truth_is_flipped_encoding():
    gt = asymmetric_ground_truth()
    direct = encode(gt)
    assert direct["mid_weight"].sum() > 50 and direct["long_weight"].sum() > 50
    assert not np.array_equal(direct["heatmap"], direct["heatmap"][:, ::-1])  # asymmetric
    flipped_first = encode(flip_ground_truth(gt))
    flipped_after = flip_maps(direct, COCO)
    for key in direct:
        np.testing.assert_allclose(flipped_first[key], flipped_after[key], atol=1e-5, err_msg=key)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown map key 'heat'"):
        flip_maps({"heat": np.zeros((3, 3, 17))}, COCO)
    with pytest.raises(ValueError, match="'short' has 17 channels"):
        flip_maps({"short": np.zeros((3, 3, 17))}, COCO)
    with pytest.raises(ValueError, match=r"\(h, w, C\) or \(B, h, w, C\)"):
        flip_maps({"heatmap": np.zeros((3, 17))}, COCO)
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 3\)"):
        flip_keypoints(np.zeros((2, 3, 3)), 49, COCO)
