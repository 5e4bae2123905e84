"""strongpose.evaluation: COCO results and COCOeval figures with known answers."""

import contextlib
import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from coco_synth import write_synth_coco
from strongpose.coco import CocoKeypoints
from strongpose.evaluation import (METRIC_NAMES, encode_mask, evaluate, load_results,
                                   people_to_results, save_results)
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
