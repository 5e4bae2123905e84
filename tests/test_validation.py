"""strongpose.validation: network -> identity crop -> decoder -> COCOeval on a split.

A stand-in network that returns the exact target maps of each image it is shown (encoded
by the training pipeline from the ground truth, as logits) must score AP ~1 through the
whole path (crop, network call, decode, back to original pixels, COCOeval); the same with
its heat maps zeroed scores ~0. Limits, missing images and split names are checked too.
"""

import hashlib
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from strongpose import maps as map_table  # noqa: E402
from strongpose.config import load_config  # noqa: E402
from strongpose.validation import predict_split, split_ap, split_images  # noqa: E402

EPS = 1e-4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from strongpose.synthetic import write_dataset
    root = tmp_path_factory.mktemp("synth")
    # Not square: the crop pads, so mapping back to original pixels is exercised.
    write_dataset(root, split="val", images=6, size=(193, 257), seed=3, empty_rate=0.0)
    return root


def config(root, *overrides):
    return load_config("tiny", [f"data.coco_root={root}", "data.val_split=val",
                                "model.input_size=257", "train.batch_size=4", *overrides])


def _key(image) -> str:
    return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()


class ExactNetwork:
    """``network(images)`` -> the exact target maps of each known crop (logits, offsets)."""

    def __init__(self, cfg, root, cache, broken: bool = False):
        from strongpose.data_generator import make_dataset
        self.known = {}
        ds = make_dataset(cfg, cfg.data.val_split, cache_dir=cache, training=False, augment=False,
                          progress=False)
        for images, targets in ds:
            for b, image in enumerate(np.asarray(images)):
                out = {}
                for spec in map_table.MAPS:
                    v = np.asarray(targets[spec.key][b], np.float32)
                    if spec.logits:
                        p = np.clip(v, EPS, 1 - EPS)
                        v = np.log(p / (1 - p))
                        if broken and spec.key == "heatmap":
                            v = np.full_like(v, math.log(EPS))
                    out[spec.output_key] = v
                self.known[_key(image)] = out
        self.calls = 0

    def __call__(self, images, training=False):
        self.calls += 1
        per = [self.known[_key(x)] for x in np.asarray(images, np.float32)]
        return {k: np.stack([p[k] for p in per]) for k in per[0]}


def test_exact_maps_score_one_and_broken_maps_zero(data_root, tmp_path):
    cfg = config(data_root)
    net = ExactNetwork(cfg, data_root, tmp_path / "cache")
    figures = split_ap(net, cfg, "val")
    assert figures["AP"] > 0.95 and figures["AP50"] > 0.99, figures
    assert net.calls == 2                       # 6 images in batches of 4
    broken = ExactNetwork(cfg, data_root, tmp_path / "cache", broken=True)
    assert split_ap(broken, cfg, "val")["AP"] < 0.05


def test_results_are_in_original_pixels_and_limit_takes_first_ids(data_root, tmp_path):
    cfg = config(data_root)
    net = ExactNetwork(cfg, data_root, tmp_path / "cache")
    pred = predict_split(net, cfg, "val", limit=3, keep_people=True)
    ids = pred.coco.image_ids
    assert pred.image_ids == ids[:3] and not pred.skipped
    assert {r["image_id"] for r in pred.results} <= set(ids[:3])
    for r in pred.results:                      # keypoints of 257 x 193 images, not the crop
        xy = np.asarray(r["keypoints"]).reshape(-1, 3)
        seen = xy[xy[:, 2] > 0.5]
        assert (seen[:, 0] >= -2).all() and (seen[:, 0] <= 259).all()
        assert (seen[:, 1] >= -2).all() and (seen[:, 1] <= 195).all()
    # Matched to ground truth: each annotated person's nearest result lies on it (median
    # keypoint error about a pixel; a wrong crop transform would be off by tens of pixels).
    coco = pred.coco
    for image_id in ids[:3]:
        for ann in coco.annotations(image_id):
            if ann.get("iscrowd") or not ann.get("num_keypoints"):
                continue
            gt = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
            vis = gt[:, 2] > 0
            errors = [np.median(np.abs(np.asarray(p.keypoints)[vis, :2] - gt[vis, :2]))
                      for p in pred.people[image_id]]
            assert min(errors) < 1.5, (image_id, min(errors))


def test_missing_image_is_left_out_with_a_warning(data_root, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(data_root, root)
    cfg = config(root)
    net = ExactNetwork(cfg, root, tmp_path / "cache")
    coco, ids, missing = split_images(cfg, "val")
    victim = coco.image_path(ids[1])
    victim.unlink()
    with pytest.warns(UserWarning, match="1 image"):
        pred = predict_split(net, cfg, "val")
    assert ids[1] not in pred.image_ids and len(pred.image_ids) == len(ids) - 1
    assert pred.skipped == [f"{victim}: missing"]


def test_bad_arguments(data_root):
    cfg = config(data_root)
    with pytest.raises(ValueError, match="limit"):
        split_images(cfg, "val", limit=0)
    with pytest.raises(FileNotFoundError):
        split_images(cfg, "nope")
