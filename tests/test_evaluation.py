"""strongpose.evaluation: COCO results and COCOeval figures with known answers."""

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from coco_synth import write_synth_coco
from strongpose.coco import CocoKeypoints
from strongpose.evaluation import (METRIC_NAMES, check_finite, encode_mask, evaluate,
                                   load_results, people_to_results, person_to_result,
                                   save_results)
from strongpose.skeleton import COCO_SKELETON, Skeleton


@dataclass
class P:
    """A stand-in for post_proc.Person."""

    keypoints: np.ndarray
    score: float
    box: tuple
    mask: Optional[np.ndarray] = None




def perfect_people(synth, coco):
    """Every annotated person, exactly: keypoints (score 1 where labelled) and mask."""
    out = {}
    for image_id in coco.image_ids:
        gt = coco.ground_truth(image_id, COCO_SKELETON, max_people=4)
        people = []
        for i in range(gt.num_people):
            kps = gt.keypoints[i].copy()
            kps[:, 2] = (kps[:, 2] > 0).astype(np.float32)
            mask = gt.person_masks[i].astype(bool) if gt.has_mask[i] else None
            people.append(P(kps, 1.0 - 0.1 * i, (0, 0, 10, 10), mask))
        out[image_id] = people
    return out


def all_results(people_by_image):
    return [r for image_id, people in people_by_image.items()
            for r in people_to_results(people, image_id)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy-2 decode
def test_result_format(synth):
    mask = np.zeros((6, 7), bool)
    mask[1:3, 2:5] = True
    kps = np.arange(51, dtype=np.float32).reshape(17, 3)
    (r,) = people_to_results([P(kps, 0.7, (1, 2, 3, 4), mask)], image_id=5)
    assert r["image_id"] == 5 and r["category_id"] == 1 and r["score"] == pytest.approx(0.7)
    assert r["keypoints"] == [float(v) for v in range(51)]
    assert r["bbox"] == [1.0, 2.0, 3.0, 4.0]
    assert isinstance(r["segmentation"]["counts"], str) and r["segmentation"]["size"] == [6, 7]
    rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    (r2,) = people_to_results([P(kps, 0.7, (1, 2, 3, 4))], image_id=5)
    assert "segmentation" not in r2


def test_bad_people_are_refused():
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        people_to_results([P(np.zeros((17, 2)), 1.0, (0, 0, 1, 1))], 1)
    with pytest.raises(ValueError, match="box"):
        people_to_results([P(np.zeros((17, 3)), 1.0, (0, 0, 1))], 1)
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 3, 4)))


def test_perfect_results_score_one(synth, coco):
    results = all_results(perfect_people(synth, coco))
    kp = evaluate(coco, results, "keypoints")
    assert list(kp) == list(METRIC_NAMES)
    assert kp["AP"] == pytest.approx(1.0) and kp["AR"] == pytest.approx(1.0)
    assert kp["AP50"] == pytest.approx(1.0) and kp["AP75"] == pytest.approx(1.0)
    # Masks of the annotated people: the unannotated person C is a miss in standard
    # scoring (2 of 3 masked people found), and ignored with ignore_unannotated.
    segm = evaluate(coco, results, "segm")
    assert segm["AR"] == pytest.approx(2 / 3, abs=1e-6)
    segm_ign = evaluate(coco, results, "segm", ignore_unannotated=True)
    assert segm_ign["AP"] == pytest.approx(1.0) and segm_ign["AR"] == pytest.approx(1.0)


def test_figures_match_cocoeval_stats(synth, coco):
    people = perfect_people(synth, coco)
    people[1][1].keypoints[:, :2] += 3.0  # B a little off: OKS < 1
    results = all_results(people)
    kp = evaluate(coco, results, "keypoints")
    dt = coco.coco.loadRes([{k: r[k] for k in ("image_id", "category_id", "keypoints", "score")}
                            for r in results])
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco.coco, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose([kp[n] for n in METRIC_NAMES], ev.stats, atol=1e-9)
    assert kp["AP"] < 1.0


def test_no_results_give_zeros(coco):
    for iou_type in ("keypoints", "segm"):
        figures = evaluate(coco, [], iou_type)
        assert figures == {name: 0.0 for name in METRIC_NAMES}
    # Results only for an image without people: zeros for the people images too.
    assert evaluate(coco, [], image_ids=[2])["AP"] == 0.0


def test_wrong_place_lowers_ap(synth, coco):
    people = perfect_people(synth, coco)
    people[1][0].keypoints[:, 0] += 40.0  # A moved 40 px right: no longer a match
    figures = evaluate(coco, all_results(people), "keypoints")
    assert figures["AP"] < 0.8 and figures["AR"] == pytest.approx(2 / 3, abs=1e-6)


def test_false_positive_ranked_first_lowers_ap(synth, coco):
    people = perfect_people(synth, coco)
    ghost = P(people[1][0].keypoints + np.array([0, 30, 0], np.float32), 5.0, (0, 0, 1, 1))
    people[2] = [ghost]  # a confident detection in the empty image
    figures = evaluate(coco, all_results(people), "keypoints")
    assert figures["AR"] == pytest.approx(1.0) and figures["AP"] < 1.0


def test_image_ids_restrict_the_scoring(synth, coco):
    people = perfect_people(synth, coco)
    people[3][0].keypoints[:, 0] += 40.0  # image 3 wrong
    results = all_results(people)
    assert evaluate(coco, results, image_ids=[1, 2])["AP"] == pytest.approx(1.0)
    assert evaluate(coco, results, image_ids=[3])["AP"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate(coco, results, image_ids=[42])


def test_sigmas_come_from_the_skeleton(synth, coco):
    people = perfect_people(synth, coco)
    for ps in people.values():
        for p in ps:
            p.keypoints[:, :2] += 2.0
    results = all_results(people)
    loose = Skeleton(sigmas=tuple(np.full(17, 1.0)))
    tight = Skeleton(sigmas=tuple(np.full(17, 0.01)))
    assert evaluate(coco, results, skeleton=loose)["AP"] == pytest.approx(1.0)
    assert evaluate(coco, results, skeleton=tight)["AP"] < 0.5


def test_bad_input_is_refused(synth, coco):
    results = all_results(perfect_people(synth, coco))
    with pytest.raises(ValueError, match="iou_type"):
        evaluate(coco, results, "bbox")
    with pytest.raises(ValueError, match="3\\*K"):
        evaluate(coco, [dict(results[0], keypoints=[1.0, 2.0, 3.0])])
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate(coco, [dict(results[0], image_id=77)])


def test_quiet_flag(coco, synth, capsys):
    results = all_results(perfect_people(synth, coco))
    evaluate(coco, results, quiet=True)
    assert capsys.readouterr().out == ""
    evaluate(coco, results, quiet=False)
    assert "Average Precision" in capsys.readouterr().out


def test_results_file_round_trip(tmp_path, synth, coco):
    results = all_results(perfect_people(synth, coco))
    path = save_results(results, tmp_path / "out" / "results.json")
    back = load_results(path)
    assert back == results
    assert evaluate(synth.annotation_file, back)["AP"] == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{]")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="list of objects"):
        load_results(tmp_path / "obj.json")
    (tmp_path / "lack.json").write_text('[{"image_id": 1}]')
    with pytest.raises(ValueError, match="lacks"):
        load_results(tmp_path / "lack.json")


# ----------------------------------------------------------- no NaN or Infinity, ever
def _person(**change):
    kps = np.tile(np.float32([10.0, 20.0, 0.5]), (17, 1))
    fields = dict(keypoints=kps, score=0.8, box=(1.0, 2.0, 3.0, 4.0))
    fields.update(change)
    return P(**fields)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_people_are_refused_naming_image_and_field(bad):
    kps = _person().keypoints.copy()
    kps[2, 1] = bad                                       # keypoint 2, y: flat index 7
    with pytest.raises(ValueError, match=r"person 1 of image 42: keypoints\[7\] \(keypoint 2, y\)"):
        people_to_results([_person(), _person(keypoints=kps)], image_id=42)
    with pytest.raises(ValueError, match=r"of image 42: score is .*finite numbers only"):
        person_to_result(_person(score=bad), image_id=42)
    with pytest.raises(ValueError, match=r"person 0 of image 7: bbox\[3\] \(h\)"):
        people_to_results([_person(box=(0.0, 0.0, 1.0, bad))], image_id=7)
    kps = _person().keypoints.copy()
    kps[16, 2] = bad                                      # a keypoint score
    with pytest.raises(ValueError, match=r"keypoints\[50\] \(keypoint 16, score\)"):
        people_to_results([_person(keypoints=kps)], image_id=7)


def test_check_finite_accepts_finite_and_ignores_text():
    r = person_to_result(_person(mask=np.eye(4, dtype=bool)), image_id=3)
    check_finite(r)                                       # RLE counts are text: fine
    check_finite({"image_id": 1, "score": 1, "keypoints": [0, 1.5, True], "extra": "nan"})
    with pytest.raises(ValueError, match=r"result of image 1: area is nan"):
        check_finite({"image_id": 1, "score": 1.0, "area": np.float32("nan")})


def test_save_refuses_non_finite_and_writes_nothing(tmp_path):
    good = person_to_result(_person(), image_id=5)
    path = tmp_path / "sub" / "results.json"
    for field, value in (("score", math.nan), ("bbox", [0.0, math.inf, 1.0, 1.0]),
                         ("keypoints", good["keypoints"][:-1] + [-math.inf])):
        bad = dict(good, image_id=9, **{field: value})
        with pytest.raises(ValueError, match=rf"result 1 of image 9: {field}"):
            save_results([good, bad], path)
        assert not path.exists()
        assert not path.parent.exists() or os.listdir(path.parent) == []


def test_save_is_atomic(tmp_path):
    """A failed save leaves the old file as it was, and no temporary file."""
    path = tmp_path / "results.json"
    good = [person_to_result(_person(), image_id=5)]
    save_results(good, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="score is inf"):
        save_results(good + [dict(good[0], score=math.inf)], path)
    with pytest.raises(TypeError):                        # fails half-way through json.dump
        save_results(good + [dict(good[0], extra=object())], path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
    # A successful save replaces the file whole; its mode is an ordinary file's.
    save_results(good * 3, path)
    assert load_results(path) == good * 3
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_saved_file_is_strict_json(tmp_path):
    path = save_results([person_to_result(_person(), image_id=5)], tmp_path / "r.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the file"))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_load_rejects_nan_and_infinity(tmp_path, token):
    rows = [{"image_id": 1, "category_id": 1, "score": 0.5, "keypoints": [1.0, 2.0, 0.5]},
            {"image_id": 8, "category_id": 1, "score": 0.5, "keypoints": [1.0, 2.0, 0.5]}]
    text = json.dumps(rows).replace("2.0", token, 2)     # keypoints[1] of both; first is named
    path = tmp_path / "nan.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"result 0 of image 1: keypoints\[1\] \(keypoint 0, y\)"
                       r" is -?(nan|inf).*JSON does not allow"):
        load_results(path)
    path.write_text(json.dumps(rows[:1] + [dict(rows[1], score=0.0)]).replace("0.0", token))
    with pytest.raises(ValueError, match=r"nan.json: result 1 of image 8: score is"):
        load_results(path)
