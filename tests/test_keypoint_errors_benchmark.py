"""benchmarks/keypoint_errors.py: pairing people by OKS and the per-keypoint figures."""

import math

import numpy as np
import pytest

from bench import load_benchmark

ke = load_benchmark("keypoint_errors")
SIGMAS = np.array([0.025, 0.079, 0.107])


def gt(points, v=(2, 2, 2)):
    return np.column_stack([np.asarray(points, float), v])


def test_pairs_each_person_with_its_best_oks_prediction():
    a = gt([(10, 10), (20, 30), (30, 50)])
    b = gt([(100, 10), (110, 30), (120, 50)], v=(2, 0, 2))
    preds = [a[:, :2].copy(), b[:, :2] + [[3, 4], [50, 50], [0, 0]], a[:, :2] + 40]
    out = ke.pair_errors([(a, 400.0), (b, 100.0)], [preds, preds], SIGMAS)
    assert out.oks[0] == pytest.approx(1.0)
    np.testing.assert_allclose(out.distance[0], 0.0)
    assert out.distance[1, 0] == pytest.approx(5.0) and out.distance[1, 2] == 0.0
    assert np.isnan(out.distance[1, 1]) and np.isnan(out.term[1, 1])     # unlabelled
    term = math.exp(-25.0 / (2 * 100.0 * (2 * 0.025) ** 2))
    assert out.term[1, 0] == pytest.approx(term)
    assert out.oks[1] == pytest.approx((term + 1.0) / 2)                  # labelled only
    assert out.relative[1, 0] == pytest.approx(5.0 / 10.0 * 100)


def test_a_person_without_predictions_scores_zero():
    a = gt([(10, 10), (20, 30), (30, 50)])
    out = ke.pair_errors([(a, 400.0)], [[]], SIGMAS)
    assert out.oks[0] == 0.0 and (out.term[0] == 0).all() and np.isnan(out.distance[0]).all()
    summary = ke.summarise(out, ["a", "b", "c"], SIGMAS)
    assert summary["keypoints"]["a"]["mean_oks_term"] == 0.0
    assert summary["keypoints"]["a"]["median_px"] is None
    assert summary["oks_at_least"]["0.5"] == 0.0


def test_summary_figures():
    people = [gt([(10 * i, 10), (10 * i, 30), (10 * i, 50)]) for i in range(1, 5)]
    shifts = [0.0, 1.0, 2.0, 12.0]                       # keypoint 0 off by these pixels
    preds = [[p[:, :2] + [[s, 0], [0, 0], [0, 0]]] for p, s in zip(people, shifts)]
    out = ke.pair_errors([(p, 100.0) for p in people], preds, SIGMAS)
    s = ke.summarise(out, ["a", "b", "c"], SIGMAS, far=8.0)
    row = s["keypoints"]["a"]
    assert row["n"] == 4 and row["median_px"] == pytest.approx(1.5)
    assert row["far_share"] == 0.25 and row["median_pct"] == pytest.approx(15.0)
    allowed = math.sqrt(-2 * math.log(0.9)) * 2 * 0.025 * 100
    assert row["allowed_pct_for_0.9"] == pytest.approx(allowed, abs=0.01)
    assert s["keypoints"]["b"]["mean_oks_term"] == 1.0 and s["people"] == 4
    assert s["oks_at_least"]["0.95"] == 0.25                # only the exact one


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="shape"):
        ke.pair_errors([(np.zeros((2, 3)), 10.0)], [[]], SIGMAS)
    with pytest.raises(ValueError, match="no labelled keypoint"):
        ke.pair_errors([(gt([(1, 1)] * 3, v=(0, 0, 0)), 10.0)], [[]], SIGMAS)


def test_command_line_on_a_run(tmp_path, capsys):
    """End to end on an untrained tiny run and a drawn val split: every annotated person
    is counted and the last line is the JSON summary."""
    pytest.importorskip("tensorflow")
    import json

    import yaml

    from strongpose import synthetic
    from strongpose.config import load_config
    from strongpose.model import build_model
    data = tmp_path / "synth"
    synthetic.write_splits(data, train=0, val=3, seed=1, size=65, people=(1, 2), crowd_rate=0.0,
                           mask_only_rate=0.0)
    cfg = load_config("tiny", ["model.input_size=65", "decoder.max_people=5",
                               f"data.coco_root={data}", "data.val_split=val"])
    run = tmp_path / "run"
    run.mkdir()
    build_model(cfg, training_outputs=True).save_weights(str(run / "model.weights.h5"))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    summary = ke.main([str(run), "--checkpoint", "final", "--images", "3"])
    annotations = json.loads((data / "annotations" / "person_keypoints_val.json").read_text())
    people = [a for a in annotations["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    assert summary["people"] == len(people) > 0 and summary["images"] == 3
    assert set(summary["keypoints"]) <= set(cfg.skeleton.names) and summary["keypoints"]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["people"] == len(people)
