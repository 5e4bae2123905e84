"""strongpose.validation: network -> Predictor (evaluate.py's path) -> decoder -> COCOeval.

A stand-in network that returns the exact target maps of each image it is shown (encoded
from the ground truth, as logits: ``stub_network.TargetsNetwork``) must score AP ~1
through the whole path (network call, decode, original pixels, COCOeval); the same with
its heat maps zeroed scores ~0. Limits, missing and unreadable images and split names are
checked too. That ``evaluate.py`` gives the same figures is in test_evaluate.py.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strongpose import maps as map_table  # noqa: E402
from strongpose.config import load_config  # noqa: E402
from strongpose.images import read_image  # noqa: E402
from strongpose.validation import predict_split, split_ap, split_images  # noqa: E402
from stub_network import EPS, TargetsNetwork  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from strongpose.synthetic import write_dataset
    root = tmp_path_factory.mktemp("synth")
    # Not square: the Predictor pads to s*n + 1 on each side only (257 x 193 at stride 8).
    write_dataset(root, split="val", images=6, size=(193, 257), seed=3, empty_rate=0.0)
    return root


def config(root, *overrides):
    return load_config("tiny", [f"data.coco_root={root}", "data.val_split=val",
                                "model.input_size=257", *overrides])


class ExactNetwork:
    """``network(images, training=False)`` -> the exact target maps of each known image
    (they are run at their own size: longer side 257 = ``model.input_size``)."""

    def __init__(self, cfg, broken: bool = False):
        coco, ids, _ = split_images(cfg, "val")
        self.net = TargetsNetwork(cfg, stride=cfg.model.output_stride)
        for i in ids:
            if coco.image_path(i).is_file():
                self.net.add(read_image(coco.image_path(i)),
                             coco.ground_truth(i, cfg.skeleton, cfg.codec.max_people), flip=False)
        self.heatmap = map_table.SPECS["heatmap"].output_key
        self.broken = broken

    @property
    def calls(self) -> int:
        return self.net.calls

    def __call__(self, images, training=False):
        out = self.net(images)
        if self.broken:
            out[self.heatmap] = np.full_like(out[self.heatmap], math.log(EPS))
        return out


def test_exact_maps_score_one_and_broken_maps_zero(data_root, tmp_path):
    cfg = config(data_root)
    net = ExactNetwork(cfg)
    figures = split_ap(net, cfg, "val", batch_size=4)
    assert figures["AP"] > 0.95 and figures["AP50"] > 0.99, figures
    assert net.calls == 2                       # 6 images of one size in batches of 4
    broken = ExactNetwork(cfg, broken=True)
    assert split_ap(broken, cfg, "val")["AP"] < 0.05


def test_results_are_in_original_pixels_and_limit_takes_first_ids(data_root, tmp_path):
    cfg = config(data_root)
    net = ExactNetwork(cfg)
    pred = predict_split(net, cfg, "val", limit=3, keep_people=True)
    ids = pred.coco.image_ids
    assert pred.image_ids == ids[:3] and not pred.skipped
    assert {r["image_id"] for r in pred.results} <= set(ids[:3])
    for r in pred.results:                      # keypoints of 257 x 193 images, not the input
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


def test_missing_and_unreadable_images_are_left_out_with_a_warning(data_root, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(data_root, root)
    cfg = config(root)
    net = ExactNetwork(cfg)
    coco, ids, missing = split_images(cfg, "val")
    victim, broken = coco.image_path(ids[1]), coco.image_path(ids[3])
    victim.unlink()
    broken.write_bytes(broken.read_bytes()[:200])     # truncated JPEG
    with pytest.warns(UserWarning, match="2 image"):
        pred = predict_split(net, cfg, "val")
    assert pred.image_ids == [i for i in ids if i not in (ids[1], ids[3])]
    assert pred.skipped[0] == f"{victim}: missing"
    assert pred.skipped[1].startswith(f"{broken}: ") and len(pred.skipped) == 2


def test_bad_arguments(data_root):
    cfg = config(data_root)
    with pytest.raises(ValueError, match="limit"):
        split_images(cfg, "val", limit=0)
    with pytest.raises(FileNotFoundError):
        split_images(cfg, "nope")


def test_masks_of_a_picture_over_max_side_are_scored_at_its_size(tmp_path):
    """A picture over ``max_side`` runs downscaled; its RLE masks are at the file's size."""
    import cv2
    from strongpose.predictor import Predictor
    from strongpose.validation import predict_images
    cfg = load_config("tiny", ["model.input_size=129", "decoder.max_people=3"])
    path = tmp_path / "wide.png"
    picture = (np.random.default_rng(0).random((20, 280, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), cv2.resize(picture, (4200, 300), interpolation=cv2.INTER_NEAREST))
    predictor = Predictor.from_config(cfg)
    pred = predict_images(predictor, [(7, path)])
    assert pred.image_ids == [7] and pred.results, "the untrained model should find noise people"
    for r in pred.results:
        assert r["segmentation"]["size"] == [300, 4200]
        assert max(r["keypoints"][0::3]) <= 4199
