"""Round trip: ground truth -> targets (encode) -> post_proc (decode) -> COCOeval.

Also the pieces of benchmarks/decode_oracle.py: grouping counts, people scenes, the CLI.
"""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from bench import load_benchmark
from coco_synth import write_synth_coco
from strongpose.coco import CocoKeypoints, pad_to_stride
from strongpose.config import Config

oracle = load_benchmark("decode_oracle")


@dataclass
class Det:
    keypoints: np.ndarray


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synth_coco(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def synth_coco(synth):
    return CocoKeypoints(synth.annotation_file, image_dir=synth.image_dir)


# ------------------------------------------------------------------- grouping rule
def _gt(points):
    """(G, K=3, 3) from lists of (x, y) or None."""
    return np.array([[(0, 0, 0) if p is None else (p[0], p[1], 2) for p in person]
                     for person in points], np.float32)


def _det(points, score=1.0):
    return Det(np.array([(0, 0, 0) if p is None else (p[0], p[1], score) for p in points],
                        np.float32))


def test_match_people_known_counts():
    gt = _gt([[(10, 10), (20, 10), (30, 10)],      # whole
              [(10, 50), (20, 50), None],          # split over two detections
              [(10, 90), (20, 90), (30, 90)],      # partial: one detection, 2 of 3
              [(100, 100), (110, 100), (120, 100)]])  # missed
    dets = [_det([(11, 11), (20, 12), (30, 10)]),
            _det([(10, 50), None, None]),
            _det([None, (21, 50), (300, 300)]),
            _det([(10, 90), (20, 90), (80, 80)]),
            _det([(100, 100), (110, 100), (120, 100)], score=0.0)]  # zero scores hold nothing
    counts = oracle.match_people(gt, dets, tol=4.0)
    assert counts == {"whole": 1, "split": 1, "partial": 1, "missed": 1, "merged": 0}


def test_match_people_merged_and_empty():
    gt = _gt([[(10, 10), (20, 10), (30, 10)], [(10, 50), (20, 50), (30, 50)]])
    merged = [_det([(10, 10), (20, 10), (30, 50)])]
    counts = oracle.match_people(gt, merged, tol=4.0)
    assert counts["merged"] == 1 and counts["partial"] == 2 and counts["whole"] == 0
    assert oracle.match_people(gt, [], tol=4.0)["missed"] == 2
    assert oracle.match_people(np.zeros((0, 3, 3)), merged)["missed"] == 0
    far = [_det([(15, 10), (20, 10), (30, 10)])]  # nose 5 px off
    assert oracle.match_people(gt[:1], far, tol=4.0)["partial"] == 1
    assert oracle.match_people(gt[:1], far, tol=6.0)["whole"] == 1


# ---------------------------------------------------------------- people scenes
def test_people_scene_places_copies_on_a_grid():
    kps = np.array([[5, 5, 2], [15, 25, 2], [0, 0, 0]], np.float32)
    mask = np.ones((30, 20), np.uint8)
    gt = oracle.people_scene(kps, mask, n=5, grid=3, max_people=8)
    assert gt.num_people == 5 and gt.image_size == (640, 640)
    assert gt.person_masks.shape == (8, 640, 640)
    np.testing.assert_array_equal(gt.has_mask, [1, 1, 1, 1, 1, 0, 0, 0])
    assert (gt.person_masks.sum(axis=(1, 2))[:5] == 600).all()
    assert gt.person_masks.sum(axis=0).max() == 1                      # no overlap
    cell = 640 // 3
    np.testing.assert_allclose(gt.keypoints[1, 0, :2] - gt.keypoints[0, 0, :2], [cell, 0])
    np.testing.assert_allclose(gt.keypoints[3, 0, :2] - gt.keypoints[0, 0, :2], [0, cell])
    assert not gt.keypoints[:, 2].any()                                  # unlabelled stays 0
    ys, xs = np.nonzero(gt.person_masks[0])
    assert xs.min() + 5 == gt.keypoints[0, 0, 0] and ys.min() + 5 == gt.keypoints[0, 0, 1]


# ------------------------------------------------------------------- round trip
def test_encoder_gives_maps_of_the_contract(synth_coco):
    cfg = Config()
    gt = pad_to_stride(synth_coco.ground_truth(1, cfg.skeleton, cfg.codec.max_people), 8)
    maps = oracle.OracleEncoder(cfg, 8)(gt)
    h, w = (161 - 1) // 8 + 1, (193 - 1) // 8 + 1
    k, e = cfg.skeleton.num_keypoints, cfg.skeleton.num_edges
    assert {key: v.shape for key, v in maps.items()} == {
        "heatmap": (h, w, k), "short": (h, w, 2 * k), "mid": (h, w, 4 * e),
        "long": (h, w, 2 * k), "body": (h, w, 1)}
    assert all(v.dtype == np.float32 for v in maps.values())


@pytest.mark.parametrize("stride", [8, 16])
def test_round_trip_on_synthetic_set(synth_coco, stride):
    cfg = Config()
    outcome = oracle.run_oracle(synth_coco, cfg, stride)
    summary = oracle.summarize(synth_coco, cfg, outcome)
    assert summary["AP"] >= 0.95 and summary["AR"] >= 0.95
    assert summary["people_whole"] == 3
    assert summary["people_split"] == summary["people_missed"] == 0
    assert summary["images"] == 3 and len(outcome.ms) == 3
    # Image 1's two masked people come back as masks that overlap their truth.
    assert summary["segm_AP_annotated"] > 0.3


def test_round_trip_on_coco_mini(coco_mini_annotations):
    coco = CocoKeypoints(coco_mini_annotations)
    cfg = Config()
    outcome = oracle.run_oracle(coco, cfg, 8)
    summary = oracle.summarize(coco, cfg, outcome)
    assert summary["images"] == 80
    assert sum(summary[f"people_{k}"] for k in ("whole", "split", "partial", "missed")) == 86
    assert summary["AP"] >= 0.95


def test_cli_prints_one_json_line(synth, capsys, tmp_path):
    out_file = tmp_path / "oracle.json"
    oracle.main(["--annotations", str(synth.annotation_file), "--stride", "16",
                 "--people", "4", "--limit", "2", "--repeats", "1",
                 "--json-out", str(out_file)])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("AP", "AP50", "AP75", "AR", "segm_AP", "ms_median", "ms_p90",
                "people_whole", "people_split", "people_missed", "ms_by_people"):
        assert key in summary
    assert summary["images"] == 2 and summary["stride"] == 16
    assert list(summary["ms_by_people"]) == ["1", "2", "4"]
    assert summary["whole_by_people"] == {"1": 1, "2": 2, "4": 4}
    assert json.loads(out_file.read_text()) == summary


def test_cli_rejects_bad_arguments(synth):
    with pytest.raises(SystemExit):
        oracle.parse_args(["--annotations", "x.json", "--stride", "4"])
    with pytest.raises(SystemExit):
        oracle.parse_args(["--annotations", "x.json", "--people", "-1"])
    with pytest.raises(FileNotFoundError):
        oracle.main(["--annotations", str(synth.root / "missing.json")])
