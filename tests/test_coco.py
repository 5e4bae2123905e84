"""strongpose.coco: annotations -> ground-truth arrays, padding, image reading."""

import json

import cv2
import numpy as np
import pytest

from coco_synth import IMAGE_SIZES, write_synth_coco
from strongpose.coco import (CocoFormatError, CocoKeypoints, ImageGroundTruth, load_image,
                             pad_to_stride)
from strongpose.skeleton import COCO_SKELETON, Skeleton




def test_image_ids_include_empty_images(coco):
    assert coco.image_ids == [1, 2, 3]


def test_ground_truth_arrays_are_the_known_ones(synth, coco):
    gt = coco.ground_truth(1, COCO_SKELETON, max_people=4)
    h, w = IMAGE_SIZES[1]
    assert gt.image_id == 1 and gt.image_size == (h, w) and (gt.height, gt.width) == (h, w)
    assert gt.num_people == 2
    assert gt.keypoints.shape == (4, 17, 3) and gt.keypoints.dtype == np.float32
    np.testing.assert_array_equal(gt.keypoints[:2], synth.keypoints[1])
    assert not gt.keypoints[2:].any()
    assert gt.person_masks.shape == (4, h, w) and gt.person_masks.dtype == np.uint8
    np.testing.assert_array_equal(gt.person_masks[:2], synth.person_masks[1])
    assert not gt.person_masks[2:].any()
    np.testing.assert_array_equal(gt.has_mask, [True, True, False, False])
    np.testing.assert_array_equal(gt.crowd_mask, synth.crowd_masks[1])
    np.testing.assert_array_equal(gt.unannotated_mask, synth.unannotated_masks[1])
    np.testing.assert_array_equal(gt.annotation_ids, [1, 2, -1, -1])
    # B's ankles are unlabelled.
    np.testing.assert_array_equal(gt.keypoints[1, 15:, 2], [0, 0])


def test_image_without_people(coco):
    gt = coco.ground_truth(2, COCO_SKELETON, max_people=3)
    assert gt.num_people == 0 and gt.image_size == IMAGE_SIZES[2]
    assert not gt.keypoints.any() and not gt.person_masks.any()
    assert not gt.crowd_mask.any() and not gt.unannotated_mask.any()


def test_person_without_segmentation_has_no_mask(synth, coco):
    gt = coco.ground_truth(3, COCO_SKELETON, max_people=2)
    assert gt.num_people == 1
    np.testing.assert_array_equal(gt.has_mask, [False, False])
    assert not gt.person_masks.any()
    np.testing.assert_array_equal(gt.keypoints[0], synth.keypoints[3][0])


def test_too_many_people_keeps_largest_warns_once_and_ignores_the_rest(synth, coco):
    with pytest.warns(UserWarning, match="max_people=1"):
        gt = coco.ground_truth(1, COCO_SKELETON, max_people=1)
    assert gt.num_people == 1
    np.testing.assert_array_equal(gt.keypoints[0], synth.keypoints[1][0])  # A is larger
    # B (dropped) joins the ignore region.
    np.testing.assert_array_equal(
        gt.unannotated_mask, synth.unannotated_masks[1] | synth.person_masks[1][1])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        coco.ground_truth(1, COCO_SKELETON, max_people=1)  # no second warning


def test_pad_to_stride_pads_right_and_bottom(synth, coco):
    gt = coco.ground_truth(1, COCO_SKELETON, max_people=2)
    padded = pad_to_stride(gt, 8)
    h, w = IMAGE_SIZES[1]  # 161 = 8*20 + 1 already; 190 -> 193
    assert (padded.height, padded.width) == (161, 193)
    assert padded.image_size == (h, w)
    np.testing.assert_array_equal(padded.crowd_mask[:h, :w], gt.crowd_mask)
    assert not padded.crowd_mask[:, w:].any()
    np.testing.assert_array_equal(padded.person_masks[:, :h, :w], gt.person_masks)
    np.testing.assert_array_equal(padded.keypoints, gt.keypoints)
    p16 = pad_to_stride(gt, 16)
    assert (p16.height, p16.width) == (161, 193)
    gt3 = pad_to_stride(coco.ground_truth(3, COCO_SKELETON, max_people=2), 16)
    assert (gt3.height, gt3.width) == (145, 161)
    with pytest.raises(ValueError, match="stride"):
        pad_to_stride(gt, 0)


def test_as_target_inputs_matches_the_map_contract(coco):
    inputs = pad_to_stride(coco.ground_truth(1, COCO_SKELETON, max_people=5), 8).as_target_inputs()
    assert set(inputs) == {"keypoints", "num_people", "person_masks", "has_mask",
                           "crowd_mask", "unannotated_mask"}
    assert inputs["keypoints"].shape == (5, 17, 3) and inputs["keypoints"].dtype == np.float32
    assert inputs["num_people"].shape == () and inputs["num_people"].dtype == np.int32
    assert int(inputs["num_people"]) == 2
    assert inputs["person_masks"].shape == (5, 161, 193) and inputs["person_masks"].dtype == np.uint8
    assert inputs["has_mask"].dtype == bool and inputs["has_mask"].shape == (5,)
    assert inputs["crowd_mask"].shape == (161, 193) and inputs["unannotated_mask"].dtype == np.uint8


def test_other_skeleton_sizes_are_refused(coco):
    three = Skeleton(names=("a", "b", "c"), edges=((0, 1), (1, 2)), flip_pairs=(),
                     sigmas=(0.1, 0.1, 0.1))
    with pytest.raises(CocoFormatError, match="3"):
        coco.ground_truth(1, three, max_people=2)


def test_annotation_with_wrong_keypoint_count_is_refused(synth, tmp_path):
    data = json.loads(synth.annotation_file.read_text())
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:-3]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    coco = CocoKeypoints(bad)
    with pytest.raises(CocoFormatError, match="16 keypoints"):
        coco.ground_truth(1, COCO_SKELETON, max_people=2)


def test_missing_and_invalid_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CocoKeypoints(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CocoFormatError, match="not valid JSON"):
        CocoKeypoints(broken)
    not_coco = tmp_path / "list.json"
    not_coco.write_text("[1, 2]")
    with pytest.raises(CocoFormatError, match="top level"):
        CocoKeypoints(not_coco)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"images": []}))
    with pytest.raises(CocoFormatError, match="missing"):
        CocoKeypoints(partial)
    no_kp = tmp_path / "nokp.json"
    no_kp.write_text(json.dumps({"images": [], "annotations": [],
                                 "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(CocoFormatError, match="keypoint category"):
        CocoKeypoints(no_kp)


def test_unknown_image_id_and_bad_max_people(coco):
    with pytest.raises(KeyError, match="999"):
        coco.ground_truth(999, COCO_SKELETON, max_people=2)
    with pytest.raises(ValueError, match="max_people"):
        coco.ground_truth(1, COCO_SKELETON, max_people=0)


def test_load_image_is_rgb(tmp_path, coco):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 255  # blue in OpenCV's BGR
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), img)
    rgb = load_image(path)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 2] == 255).all() and not rgb[..., :2].any()
    assert load_image(coco.image_path(1)).shape == IMAGE_SIZES[1] + (3,)


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match="cannot be decoded"):
        load_image(corrupt)


def test_coco_mini_counts(coco_mini_annotations):
    coco = CocoKeypoints(coco_mini_annotations)
    gts = [coco.ground_truth(i, COCO_SKELETON, max_people=32) for i in coco.image_ids]
    assert len(gts) == 80
    assert sum(g.num_people for g in gts) == 86
    assert sum(1 for g in gts if g.num_people) == 28
    assert sum(1 for g in gts if g.unannotated_mask.any()) > 0
    assert isinstance(gts[0], ImageGroundTruth)
