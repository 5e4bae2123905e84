"""evaluate.py: results JSON and COCOeval figures end to end; the test-dev file's name and format."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import evaluate  # noqa: E402
from strongpose.coco import CocoKeypoints  # noqa: E402
from strongpose.config import load_config  # noqa: E402
from strongpose.evaluation import METRIC_NAMES  # noqa: E402
from strongpose.images import read_image  # noqa: E402
from strongpose.predictor import Predictor  # noqa: E402
from strongpose.synthetic import write_dataset  # noqa: E402
from stub_network import TargetsNetwork  # noqa: E402

SIZE = 129


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic COCO set (val split, 129x129 images) and a training folder of a tiny model."""
    root = tmp_path_factory.mktemp("eval")
    write_dataset(root / "synth", split="val", images=5, size=SIZE, seed=1)
    from strongpose.model import build_model
    cfg = load_config("tiny", [f"model.input_size={SIZE}"])
    run = root / "run"
    run.mkdir()
    build_model(cfg, training_outputs=True).save_weights(str(run / "model.weights.h5"))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return root


def test_exact_maps_score_ap_near_one(data):
    cfg = load_config("tiny", [f"model.input_size={SIZE}"])
    ann = data / "synth" / "annotations" / "person_keypoints_val.json"
    coco = CocoKeypoints(ann, image_dir=data / "synth" / "val")
    net = TargetsNetwork(cfg, stride=cfg.eval_output_stride)
    for i in coco.image_ids:
        net.add(read_image(coco.image_path(i)), coco.ground_truth(i, cfg.skeleton, cfg.codec.max_people),
                flip=False)
    images, has_gt = evaluate.image_list(ann)
    results, failed = evaluate.predict_results(Predictor(net, cfg), images, data / "synth" / "val",
                                               progress=False)
    from strongpose.evaluation import evaluate as coco_eval
    figures = coco_eval(ann, results, "keypoints", skeleton=cfg.skeleton)
    assert has_gt and not failed and figures["AP"] > 0.9, figures


def test_cli_end_to_end_with_a_real_small_model(data, capsys):
    out_dir = data / "out"
    code = evaluate.main([str(data / "run"), "--data", str(data / "synth"), "--split", "val",
                          "--limit", "3", "--output-dir", str(out_dir), "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["images"] == 3
    for name in METRIC_NAMES + ("mask_AP", "network_images_per_s", "decoder_images_per_s"):
        assert isinstance(summary[name], float) and np.isfinite(summary[name]), name
    results = json.loads((out_dir / "person_keypoints_val_strongpose_results.json").read_text())
    assert {r["image_id"] for r in results} <= {1, 2, 3}


def test_test_dev_file_is_named_and_shaped_for_the_server(data, capsys):
    ann = json.loads((data / "synth" / "annotations" / "person_keypoints_val.json").read_text())
    root = data / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "test2017").mkdir()
    info = {"images": ann["images"][:2], "categories": ann["categories"]}
    (root / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(info))
    for im in info["images"]:
        (root / "test2017" / im["file_name"]).write_bytes((data / "synth" / "val" / im["file_name"]).read_bytes())
    code = evaluate.main([str(data / "run"), "--data", str(root), "--split", "test-dev",
                          "--alg", "mine", "--output-dir", str(data / "td"), "--no-progress"])
    capsys.readouterr()
    results = json.loads((data / "td" / "person_keypoints_test-dev2017_mine_results.json").read_text())
    assert code == 0 and results
    for r in results:
        assert set(r) >= {"image_id", "category_id", "keypoints", "score"} and "segmentation" not in r
        assert len(r["keypoints"]) == 51 and r["category_id"] == 1


def test_help_and_one_line_errors(data):
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "evaluate.py"), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=data)
    assert run("--help").returncode == 0
    bad = run(str(data / "nothing"), "--data", str(data / "synth"), "--split", "val")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nothing" in bad.stderr


def test_training_validation_gives_evaluate_py_figures_and_results(data, capsys):
    """One code path: ``validation.split_ap`` on the training network (as ``train.py``
    validates) and ``evaluate.py`` on the run folder holding its weights give the same
    results and figures, on images that are resized (not square, not the input size)."""
    from strongpose.model import build_model
    from strongpose.validation import predict_split, split_ap

    write_dataset(data / "odd", split="val", images=2, size=(110, 150), seed=4)
    cfg = load_config(data / "run" / "config.yaml", [f"data.coco_root={data / 'odd'}",
                                                     "data.val_split=val"])
    network = build_model(cfg, training_outputs=True)
    network.load_weights(str(data / "run" / "model.weights.h5"))
    pred = predict_split(network, cfg, "val")
    figures = split_ap(network, cfg, "val")
    assert evaluate.main([str(data / "run"), "--data", str(data / "odd"), "--split", "val",
                          "--output-dir", str(data / "odd_out"), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads(Path(summary["results"]).read_text())
    assert pred.results and written == json.loads(json.dumps(pred.results))
    assert {k: summary[k] for k in METRIC_NAMES} == figures


@pytest.mark.parametrize("path, split", [("coco/annotations/person_keypoints_val2017.json", "val2017"),
                                         ("coco/annotations/image_info_test-dev2017.json", "test-dev2017"),
                                         ("my/person_keypoints.json", "my"),
                                         ("my/crowd_set.json", "crowd_set")])
def test_results_file_split_name_from_annotations(path, split):
    assert evaluate.annotation_split(Path(path)) == split
