"""strongpose.synthetic: the drawn COCO keypoints data set, its answers, its command line."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from bench import load_benchmark
from strongpose import synthetic
from strongpose.coco import CocoKeypoints
from strongpose.config import Config
from strongpose.skeleton import COCO_KEYPOINT_NAMES

REPO = Path(__file__).resolve().parents[1]
SIZE = (161, 201)                       # (height, width): not square, on purpose
OPTS = dict(size=SIZE, people=(1, 4), crowd_rate=0.4, overlap_rate=0.5, empty_rate=0.1,
            mask_only_rate=0.1)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    files = synthetic.write_splits(root, train=24, val=16, seed=3, **OPTS)
    return root, files


@pytest.fixture(scope="module")
def train(splits):
    root, files = splits
    return json.loads(files["train"].read_text()), root / "train"


def _decode(segm, h, w):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(segm, list):
            return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, h, w)))
        return mask_utils.decode(mask_utils.frPyObjects(segm, h, w))


def _rendered(index, split="train", seed=3):
    return synthetic.render_image(seed, index, synthetic.SynthOptions(**OPTS), split)


# ------------------------------------------------------------------------ reading
def test_layout_and_readers(splits):
    root, files = splits
    assert files == {s: root / "annotations" / f"person_keypoints_{s}.json" for s in ("train", "val")}
    for split, n in (("train", 24), ("val", 16)):
        coco = CocoKeypoints(files[split], image_dir=root / split)
        assert coco.image_ids == list(range(1, n + 1))
        assert coco.keypoint_names == list(COCO_KEYPOINT_NAMES)
        cfg = Config()
        for image_id in coco.image_ids:
            gt = coco.ground_truth(image_id, cfg.skeleton, cfg.codec.max_people)
            assert gt.image_size == SIZE
            assert coco.image_path(image_id).is_file()
        COCO(str(files[split]))                 # pycocotools' own reader
    data = json.loads(files["train"].read_text())
    (cat,) = data["categories"]
    assert cat["name"] == "person" and cat["keypoints"] == list(COCO_KEYPOINT_NAMES)
    assert len(cat["skeleton"]) == 19 and [16, 14] in cat["skeleton"]
    assert all(1 <= a <= 17 and 1 <= b <= 17 for a, b in cat["skeleton"])


def test_images_are_valid_and_of_the_stated_size(train):
    data, image_dir = train
    for info in data["images"]:
        assert (info["height"], info["width"]) == SIZE
        img = cv2.imread(str(image_dir / info["file_name"]), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == SIZE + (3,)
        assert img.std() > 5                    # not a blank canvas


# ---------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = synthetic.write_dataset(tmp_path / "a", images=4, seed=7, **OPTS)
    b = synthetic.write_dataset(tmp_path / "b", images=4, seed=7, **OPTS)
    c = synthetic.write_dataset(tmp_path / "c", images=4, seed=8, **OPTS)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "train").iterdir())
    assert len(names) == 4
    for name in names:
        pa, pb, pc = (tmp_path / d / "train" / name for d in "abc")
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    # The split name is part of the seed: train and val are different images.
    v = synthetic.write_dataset(tmp_path / "a", split="val", images=4, seed=7, **OPTS)
    assert (tmp_path / "a" / "val" / names[0]).read_bytes() != (tmp_path / "a" / "train" / names[0]).read_bytes()
    assert json.loads(v.read_text())["annotations"] != json.loads(a.read_text())["annotations"]


# ------------------------------------------------------------ fields and masks
def test_annotation_fields_and_masks(train):
    data, _ = train
    h, w = SIZE
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    n_checked = 0
    for image_id, anns in by_image.items():
        rendered = _rendered(image_id - 1)
        assert len(rendered.people) == len(anns)
        for ann, person in zip(anns, rendered.people):
            assert ann["category_id"] == 1 and ann["iscrowd"] in (0, 1)
            kps = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
            assert set(np.unique(kps[:, 2])) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
            assert (kps[kps[:, 2] == 0, :2] == 0).all()
            mask = _decode(ann["segmentation"], h, w)
            drawn = person.mask
            assert mask.shape == SIZE and mask.any()
            iou = (mask & drawn).sum() / (mask | drawn).sum()
            assert iou > 0.9, (image_id, ann["id"], iou)
            assert abs(ann["area"] - mask.sum()) <= 0.03 * mask.sum()
            assert abs(ann["area"] - drawn.sum()) <= 0.03 * drawn.sum()
            x, y, bw, bh = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert x <= xs.min() and y <= ys.min()
            assert x + bw >= xs.max() + 1 and y + bh >= ys.max() + 1
            if ann["iscrowd"]:
                assert isinstance(ann["segmentation"], dict) and ann["num_keypoints"] == 0
                continue
            assert isinstance(ann["segmentation"], list)
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            near = cv2.dilate(drawn, np.ones((5, 5), np.uint8))    # within 2 px
            for kx, ky, v in kps[kps[:, 2] > 0]:
                assert 0 <= kx <= w - 1 and 0 <= ky <= h - 1
                if v == 2:
                    assert near[int(round(ky)), int(round(kx))], (image_id, ann["id"], kx, ky)
            n_checked += 1
    assert n_checked >= 24


def test_what_the_set_holds(train):
    data, _ = train
    anns = data["annotations"]
    people = [a for a in anns if not a["iscrowd"]]
    kps = np.array([a["keypoints"] for a in people], np.float32).reshape(-1, 17, 3)
    assert (kps[:, :, 2] == 2).any() and (kps[:, :, 2] == 1).any()     # visible and occluded
    assert any(a["num_keypoints"] == 0 for a in people)                # mask-only people
    with_people = {a["image_id"] for a in anns}
    assert len(with_people) < len(data["images"])                      # empty images
    per_image = np.bincount([a["image_id"] for a in people])
    assert per_image.max() >= 2                                        # several people
    # Occluded keypoints (v = 1) come from overlaps; some people's boxes overlap.
    boxes = {}
    for a in people:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    overlapping = 0
    for bs in boxes.values():
        for i in range(len(bs)):
            for j in range(i + 1, len(bs)):
                (x0, y0, w0, h0), (x1, y1, w1, h1) = bs[i], bs[j]
                overlapping += x0 < x1 + w1 and x1 < x0 + w0 and y0 < y1 + h1 and y1 < y0 + h0
    assert overlapping >= 2


def test_crowd_regions_at_the_configured_rate(tmp_path):
    ann = synthetic.write_dataset(tmp_path, images=40, seed=0, size=129, crowd_rate=0.5,
                                  empty_rate=0.0)
    data = json.loads(ann.read_text())
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    images_with_crowd = {a["image_id"] for a in crowd}
    assert 0.25 <= len(images_with_crowd) / 40 <= 0.75
    for a in crowd:
        assert a["num_keypoints"] == 0 and not any(a["keypoints"])
        assert isinstance(a["segmentation"]["counts"], list) and a["area"] > 0
    none = synthetic.write_dataset(tmp_path / "none", images=10, seed=0, size=129, crowd_rate=0.0)
    assert not any(a["iscrowd"] for a in json.loads(none.read_text())["annotations"])
    empty = synthetic.write_dataset(tmp_path / "empty", images=5, seed=0, size=129, empty_rate=1.0)
    empty_data = json.loads(empty.read_text())
    assert len(empty_data["images"]) == 5 and empty_data["annotations"] == []


def test_bad_options_are_value_errors(tmp_path):
    for kwargs in (dict(people=(3, 1)), dict(crowd_rate=1.5), dict(size=8), dict(images=-1),
                   dict(split="a/b")):
        with pytest.raises(ValueError):
            synthetic.write_dataset(tmp_path, **kwargs)


# -------------------------------------------------------------------- round trip
def test_face_keypoints_are_drawn_features():
    """Facing the camera, the eyes are dark dots and the nose a darker-skin dot at their
    keypoints, under a cap of hair; seen from behind, the head is hair only."""
    from strongpose.synthetic.figures import _darker, draw_figure, random_figure
    for seed in range(6):
        rng = np.random.default_rng(seed)
        fig = random_figure(rng, 240.0, (160.0, 170.0), back_view_rate=0.0)
        canvas, mask = np.full((330, 330, 3), 255, np.uint8), np.zeros((330, 330), np.uint8)
        draw_figure(canvas, mask, fig)
        at = lambda k: canvas[int(round(fig.joints[k, 1])), int(round(fig.joints[k, 0]))]
        assert tuple(at(1)) == tuple(at(2)) == (20, 20, 20)
        assert tuple(at(0)) == _darker(fig.colours["skin"])
        (hx, hy), (ax, ay), _ = fig.head
        top = canvas[int(round(hy - 0.8 * ay)), int(round(hx))]       # inside the cap
        assert tuple(top) == fig.colours["hair"]
    back = random_figure(np.random.default_rng(0), 240.0, (160.0, 170.0), back_view_rate=1.0)
    canvas = np.full((330, 330, 3), 255, np.uint8)
    draw_figure(canvas, np.zeros((330, 330), np.uint8), back)
    x, y = np.round(back.joints[1]).astype(int)
    assert tuple(canvas[y, x]) == back.colours["hair"]


def test_hand_lies_beyond_the_wrist():
    """The hand starts at the wrist and reaches 1.9 forearm widths beyond it, along the
    forearm; skin inside, a darker rim; nothing past its tip."""
    from strongpose.synthetic.figures import _darker, draw_hand
    skin = (80, 130, 200)
    canvas, mask = np.zeros((200, 200, 3), np.uint8), np.zeros((200, 200), np.uint8)
    draw_hand(canvas, mask, np.array([40.0, 100.0]), np.array([100.0, 100.0]), 10.0, skin)
    row = mask[100]
    assert row[97] == 0 and row[98] == 1 and row[119] == 1 and row[120] == 0   # 98..119
    assert tuple(canvas[100, 108]) == skin and tuple(canvas[100, 98]) == _darker(skin)
    assert 11 <= mask[:, 108].sum() <= 13                         # 1.15 forearm widths across
    assert mask[:94].sum() == 0 and mask[107:].sum() == 0


def test_round_trip_keypoint_ap(splits):
    """The drawn people are decodable: exact maps of the ground truth decode to AP >= 0.9."""
    oracle = load_benchmark("decode_oracle")
    root, files = splits
    coco = CocoKeypoints(files["val"])
    cfg = Config()
    outcome = oracle.run_oracle(coco, cfg, 8)
    summary = oracle.summarize(coco, cfg, outcome)
    assert summary["images"] == 16
    assert summary["people_whole"] >= 20
    assert summary["AP"] >= 0.9 and summary["AR"] >= 0.9, summary


# ------------------------------------------------------------------ command line
def _run(*args):
    code = ("import runpy, sys; sys.argv = ['synthetic', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('strongpose.synthetic', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'})\n"
            "print('PROBE', code, ','.join(heavy) or '-')\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    *lines, probe = out.stdout.strip().splitlines()
    _, status, heavy = probe.split(" ")
    return int(status if status != "None" else 0), heavy, "\n".join(lines), out.stderr


def test_cli_help_without_tensorflow():
    status, heavy, out, _ = _run("--help")
    assert status == 0 and heavy == "-"
    assert "--train" in out and "--force" in out


def test_cli_writes_and_refuses_a_non_empty_dir(tmp_path):
    out_dir = tmp_path / "out"
    status, heavy, out, err = _run(out_dir, "--train", "3", "--val", "2", "--size", "97x129")
    assert status == 0 and heavy == "-", err
    train = json.loads((out_dir / "annotations" / "person_keypoints_train.json").read_text())
    assert len(train["images"]) == 3 and train["images"][0]["height"] == 97
    assert len(list((out_dir / "val").iterdir())) == 2
    status, _, _, err = _run(out_dir, "--train", "3", "--val", "2")
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "not empty" in err and "--force" in err
    status, _, _, err = _run(out_dir, "--train", "1", "--val", "1", "--force")
    assert status == 0, err


def test_cli_simple_scenes_and_an_override(tmp_path):
    out_dir = tmp_path / "simple"
    status, _, _, err = _run(out_dir, "--train", "6", "--val", "0", "--size", "129",
                             "--scenes", "simple", "--people", "2", "2")
    assert status == 0, err
    anns = json.loads((out_dir / "annotations" / "person_keypoints_train.json").read_text())
    assert not any(a["iscrowd"] for a in anns["annotations"])                 # no crowds
    assert all(a["num_keypoints"] > 0 for a in anns["annotations"])           # no mask-only
    per_image = np.bincount([a["image_id"] for a in anns["annotations"]], minlength=7)[1:]
    assert per_image.min() >= 1 and per_image.max() <= 2                      # --people 2 2
    assert per_image.sum() > 6                                                # mostly two


@pytest.mark.parametrize("args", [["--size", "10"], ["--train", "-3"], ["--people", "4", "1"],
                                  ["--crowd-rate", "2"], []])
def test_cli_bad_arguments_exit_2_in_one_line(tmp_path, args):
    argv = ([str(tmp_path / "o")] if args else []) + args
    status, _, _, err = _run(*argv)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_scene_options_override_and_check():
    from strongpose.synthetic.options import SCENES, scene_options
    opts = scene_options("simple", people=None, crowd_rate=0.5)
    assert opts["people"] == SCENES["simple"]["people"] and opts["crowd_rate"] == 0.5
    assert scene_options("standard") == {}
    for bad in (dict(heights=(0.9, 0.5)), dict(empty_rate=1.5), dict(people=(1, 40)),
                dict(colour="red")):
        with pytest.raises(ValueError):
            scene_options("standard", **bad)
    with pytest.raises(ValueError, match="scenes 'busy'"):
        scene_options("busy")
