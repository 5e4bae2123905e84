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


class FakeCamera:
    """A webcam that gives ``frames`` frames, then fails to read (unplugged), or raises
    KeyboardInterrupt at read ``interrupt_at`` (Ctrl-C while waiting for a frame)."""

    opened: list = []

    def __init__(self, index, frames=5, interrupt_at=None, present=True):
        self.index, self.frames, self.interrupt_at, self.present = index, frames, interrupt_at, present
        self.reads, self.released = 0, False
        FakeCamera.opened.append(self)

    def isOpened(self):
        return self.present

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        self.reads += 1
        if self.interrupt_at is not None and self.reads == self.interrupt_at:
            raise KeyboardInterrupt
        if self.reads > self.frames:
            return False, None
        return True, _picture(seed=self.reads)[..., ::-1].copy()      # BGR, as OpenCV gives

    def release(self):
        self.released = True


@pytest.fixture
def camera(monkeypatch):
    """``camera(**options)``: cv2.VideoCapture(int) becomes a FakeCamera; files still open."""
    real = cv2.VideoCapture

    def install(**options):
        FakeCamera.opened = []
        monkeypatch.setattr(cv2, "VideoCapture", lambda source, *a: FakeCamera(source, **options)
                            if isinstance(source, int) else real(source, *a))
        return FakeCamera.opened
    yield install
    monkeypatch.setattr(cv2, "VideoCapture", real)


def _video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def _check_webcam_output(out: Path, frames: int):
    assert _video_frames(out / "webcam0.mp4") == frames
    data = json.loads((out / "webcam0.json").read_text())
    assert data["video"] == "webcam0" and data["fps"] == 30.0
    assert [f["frame"] for f in data["frames"]] == list(range(frames))
    _no_leftovers(out)


def test_webcam_until_unplugged(run_dir, tmp_path, camera, capsys):
    opened = camera(frames=5)
    code = demo.main(["0", "--weights", str(run_dir), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and [c.index for c in opened] == [0] and opened[0].released
    assert any("webcam0: 5 frames" in line and "frames/s" in line for line in err.splitlines()), err
    _check_webcam_output(tmp_path, 5)


@pytest.mark.parametrize("where", ["reading", pytest.param("drawing", marks=pytest.mark.slow)])
def test_ctrl_c_saves_the_frames_so_far(run_dir, tmp_path, camera, monkeypatch, capsys, where):
    if where == "reading":
        opened = camera(frames=100, interrupt_at=4)          # 3 frames, then Ctrl-C
    else:
        opened = camera(frames=100)
        import strongpose.render as render
        real_draw, calls = render.draw_people, []

        def draw(*args, **kw):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
            return real_draw(*args, **kw)
        monkeypatch.setattr(render, "draw_people", draw)
    code = demo.main(["0", "--weights", str(run_dir), "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and opened[0].released and "webcam0: 3 frames" in err
    _check_webcam_output(tmp_path, 3)


def test_webcam_named_twice_is_opened_once_and_released(camera):
    opened = camera(frames=5)
    failed: list = []
    captures = demo.open_webcams(["0", "0", "clip.mp4"], failed)
    assert list(captures) == ["0"] and len(opened) == 1 and not failed
    captures["0"].release()
    assert opened[0].released


def test_webcam_index_without_camera_is_one_line(run_dir, tmp_path, camera, capsys, monkeypatch):
    """Told before TensorFlow and the network load (nothing else to do: they never do)."""
    opened = camera(present=False)
    monkeypatch.setattr(demo.cli, "import_tensorflow", lambda: pytest.fail("TensorFlow loaded"))
    code = demo.main(["3", "--weights", str(run_dir), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "webcam3" in line]
    assert code == 1 and lines == ["demo.py: webcam3: no camera at index 3 (or it is in use)"]
    assert [c.index for c in opened] == [3] and opened[0].released
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_min_score_and_a_picture_over_max_side(run_dir, tmp_path, capsys):
    wide = tmp_path / "wide.png"                     # longer side 4200 > 4096: drawn downscaled
    cv2.imwrite(str(wide), cv2.resize(_picture(), (4200, 300), interpolation=cv2.INTER_NEAREST))
    every = tmp_path / "all"
    assert demo.main([str(wide), "--weights", str(run_dir), "--output-dir", str(every),
                      "--min-score", "0"]) == 0
    data = json.loads((every / "wide.json").read_text())
    assert (data["width"], data["height"]) == (4200, 300)          # the file's pixels
    assert cv2.imread(str(every / "wide.jpg")).shape[:2] == (293, 4096)
    scores = sorted(p["score"] for p in data["people"])
    assert len(scores) >= 2 and scores[0] < scores[-1], "the untrained model should find noise people"
    xs = [kp[0] for p in data["people"] for kp in p["keypoints"]]
    assert max(xs) <= 4199 and max(xs) > 4096 * 0.5             # keypoints span the file's width
    threshold = scores[len(scores) // 2]
    some = tmp_path / "some"
    assert demo.main([str(wide), "--weights", str(run_dir), "--output-dir", str(some),
                      "--min-score", str(threshold)]) == 0
    kept = [p["score"] for p in json.loads((some / "wide.json").read_text())["people"]]
    assert kept and min(kept) >= threshold and len(kept) < len(scores)
    capsys.readouterr()
