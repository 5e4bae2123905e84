"""demo.py: pictures, folders, videos -> drawn pictures, video and JSON; bad inputs, no weights."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import demo  # noqa: E402
from strongpose.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training folder of a tiny untrained model at input size 65 (cheap)."""
    from strongpose.model import build_model
    cfg = load_config("tiny", ["model.input_size=65", "decoder.max_people=5"])
    run = tmp_path_factory.mktemp("run")
    build_model(cfg, training_outputs=True).save_weights(str(run / "model.weights.h5"))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return run


def _picture(h=48, w=64, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _no_leftovers(folder: Path):
    assert not [p for p in folder.rglob(".*")], "temporary files left behind"


def test_pictures_folder_video_and_bad_inputs(run_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(6):
        writer.write(_picture(seed=i))
    writer.release()
    cv2.imwrite(str(inputs / "good.jpg"), _picture())
    Image.fromarray(_picture(seed=1)).convert("CMYK").save(inputs / "cmyk.jpg")
    cv2.imwrite(str(inputs / "deep.png"), _picture(seed=2).astype(np.uint16) * 257)
    (inputs / "empty.jpg").write_bytes(b"")
    (inputs / "trunc.jpg").write_bytes((inputs / "good.jpg").read_bytes()[:200])
    (inputs / "text.png").write_text("not a picture")
    cv2.imwrite(str(inputs / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    (inputs / "notes.txt").write_text("ignored: not an image suffix")
    single = tmp_path / "single.png"
    cv2.imwrite(str(single), _picture(seed=3))
    out = tmp_path / "out"
    code = demo.main([str(inputs), str(single), str(tmp_path / "missing.mp4"), str(clip),
                      "--weights", str(run_dir), "--output-dir", str(out), "--maps", "--max-frames", "4"])
    err = capsys.readouterr().err
    assert code == 1 and "frames/s" in err
    for bad, words in (("empty.jpg", "empty"), ("trunc.jpg", "truncated"), ("text.png", "not an image"),
                       ("dot.png", "too small"), ("missing.mp4", "cannot be opened")):
        assert any(bad in line and words in line for line in err.splitlines()), (bad, err)
    for name in ("good", "cmyk", "deep", "single"):
        picture = cv2.imread(str(out / f"{name}.jpg"))
        assert picture is not None and picture.shape[:2] == (48, 64)
        data = json.loads((out / f"{name}.json").read_text())
        assert data["width"] == 64 and all(len(p["keypoints"]) == 17 for p in data["people"])
    for panel in ("heatmap", "hough", "short", "mid", "long", "body", "masks"):
        assert cv2.imread(str(out / "good_maps" / f"{panel}.jpg")) is not None
    assert not (out / "empty.jpg").exists() and not (out / "notes.json").exists()
    cap = cv2.VideoCapture(str(out / "clip.mp4"))          # the video: 4 annotated frames
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()
    frames = json.loads((out / "clip.json").read_text())["frames"]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3]
    _no_leftovers(out)


def test_no_weights_says_how_to_train(tmp_path, capsys):
    code = demo.main(["--weights", str(tmp_path / "none"), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "python train.py --config tiny --data synth --train-split train" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_no_input_draws_the_sample_picture(run_dir, tmp_path, capsys):
    code = demo.main(["--weights", str(run_dir), "--output-dir", str(tmp_path)])
    capsys.readouterr()
    assert code == 0 and cv2.imread(str(tmp_path / "astronaut.jpg")).shape == (512, 512, 3)


def test_help_answers_without_tensorflow():
    import subprocess
    out = subprocess.run([sys.executable, "-c", "import sys, demo; "
                          "sys.argv=['demo.py','--help']\ntry:\n demo.parse_args()\nexcept SystemExit: pass\n"
                          "print('tensorflow' in sys.modules)"], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip().endswith("False") and "webcam" in out.stdout
