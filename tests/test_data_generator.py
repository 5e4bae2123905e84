"""strongpose.data_generator: preparation cache, tf.data batches, determinism, errors."""

import json
import shutil

import numpy as np
import pytest

from strongpose.coco import CocoFormatError
from strongpose.config import load_config
from strongpose.data_generator import DataError, make_dataset, prepare
from strongpose.synthetic import write_dataset, write_splits

SIZE = 193            # input_size = 8*24 + 1: the synthetic images' longer side, scale 1


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("dg_synth")
    files = write_splits(root, train=10, val=2, seed=3, size=(161, SIZE), crowd_rate=0.6,
                         mask_only_rate=0.3, empty_rate=0.1)
    return root, files


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", [f"model.input_size={SIZE}"])


def _ds(cfg, synth, cache, **kw):
    root, files = synth
    kw.setdefault("batch_size", 2)
    kw.setdefault("progress", False)
    return make_dataset(cfg, files["train"], root / "train", cache, **kw)


def test_batch_shapes_and_dtypes(cfg, synth, tmp_path):
    images, targets = next(iter(_ds(cfg, synth, tmp_path / "c", seed=1)))
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype.name == "float32"
    h = (SIZE - 1) // 8 + 1
    k = cfg.skeleton.num_keypoints
    e = cfg.skeleton.num_edges
    want = {"heatmap": k, "short": 2 * k, "mid": 4 * e, "long": 2 * k, "body": 1,
            "heatmap_weight": k, "short_weight": k, "mid_weight": 2 * e, "long_weight": k,
            "body_weight": 1}
    assert {key: tuple(v.shape) for key, v in targets.items()} == \
        {key: (2, h, h, c) for key, c in want.items()}
    assert all(v.dtype.name == "float32" for v in targets.values())
    assert float(images.numpy().max()) <= 255.0 and float(images.numpy().min()) >= 0.0
    _, inputs = next(iter(_ds(cfg, synth, tmp_path / "c", seed=1, with_targets=False)))
    p = cfg.codec.max_people
    assert inputs["keypoints"].shape == (2, p, k, 3)
    assert inputs["person_masks"].shape == (2, p, h, h) and inputs["person_masks"].dtype.name == "uint8"
    assert inputs["has_mask"].dtype.name == "bool" and inputs["num_people"].dtype.name == "int32"
    assert inputs["crowd_mask"].shape == (2, h, h)
    # The cache: one label PNG per image with anything to draw, and people.npz.
    roots = list((tmp_path / "c").iterdir())
    assert len(roots) == 1 and (roots[0] / "people.npz").is_file()
    assert list((roots[0] / "labels").glob("*.png"))


def test_deterministic_for_a_seed(cfg, synth, tmp_path):
    def first(seed):
        images, targets = next(iter(_ds(cfg, synth, tmp_path / "c", seed=seed)))
        return images.numpy(), targets["long"].numpy()
    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_unaugmented_targets_decode_to_ground_truth(cfg, synth, tmp_path):
    from strongpose.post_proc import Decoder
    kw = dict(training=False, augment=False, batch_size=4, seed=0)
    ds_in = _ds(cfg, synth, tmp_path / "c", with_targets=False, **kw)
    ds_t = _ds(cfg, synth, tmp_path / "c", **kw)
    decoder = Decoder.from_config(cfg)
    checked = 0
    for (img_a, inputs), (img_b, targets) in zip(ds_in, ds_t):
        np.testing.assert_array_equal(img_a.numpy(), img_b.numpy())
        for b in range(int(img_a.shape[0])):
            maps = {key: targets[key][b].numpy() for key in ("heatmap", "short", "mid", "long", "body")}
            people = decoder(maps)
            n = int(inputs["num_people"][b])
            for gt in inputs["keypoints"][b, :n].numpy():
                lab = gt[:, 2] > 0
                if not lab.any():
                    continue
                dist = [np.abs(p.keypoints[lab, :2] - gt[lab, :2]).max() for p in people]
                assert dist and min(dist) <= 1.0, (b, dist)
                checked += 1
    assert checked >= 5


def test_crowd_and_mask_only_people_reach_the_weights(cfg, synth, tmp_path):
    kw = dict(training=False, augment=False, batch_size=4, seed=0)
    ds_in = _ds(cfg, synth, tmp_path / "c", with_targets=False, **kw)
    ds_t = _ds(cfg, synth, tmp_path / "c", **kw)
    seen_crowd = seen_unannotated = 0
    for (_, inputs), (_, t) in zip(ds_in, ds_t):
        crowd = inputs["crowd_mask"].numpy() > 0
        unann = inputs["unannotated_mask"].numpy() > 0
        disk = t["heatmap"].numpy() > 0
        weight = t["heatmap_weight"].numpy()
        ignore = (crowd | unann)[..., None] & ~disk
        assert np.all(weight[ignore] == 0)
        assert np.all(weight[~ignore] == 1)
        assert np.all(t["body_weight"].numpy()[..., 0][crowd] == 0)
        seen_crowd += int(crowd.sum())
        seen_unannotated += int(unann.sum())
    assert seen_crowd > 0 and seen_unannotated > 0


def test_corrupt_image_is_skipped_and_counted(cfg, synth, tmp_path):
    root, files = synth
    images = tmp_path / "images"
    shutil.copytree(root / "train", images)
    victim, cut = sorted(images.glob("*.jpg"))[:2]
    victim.write_bytes(b"not a jpeg at all")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])     # a truncated JPEG
    with pytest.warns(UserWarning, match="skipping image"):
        prepared = prepare(files["train"], images, tmp_path / "c", skeleton=cfg.skeleton,
                           max_people=cfg.codec.max_people, progress=False)
    assert len(prepared) == 8 and len(prepared.skipped) == 2
    assert victim.name in prepared.skipped[0] and cut.name in prepared.skipped[1]
    ds = make_dataset(cfg, files["train"], images, tmp_path / "c", training=False,
                      batch_size=4, progress=False)
    assert sum(int(x.shape[0]) for x, _ in ds) == 8


def test_not_coco_keypoints_stops_naming_the_file(cfg, synth, tmp_path):
    root, _ = synth
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(CocoFormatError, match="instances.json"):
        prepare(bad, root / "train", tmp_path / "c", skeleton=cfg.skeleton, max_people=4,
                progress=False)
    other = tmp_path / "list.json"
    other.write_text("[1, 2]")
    with pytest.raises(CocoFormatError, match="list.json"):
        prepare(other, root / "train", tmp_path / "c", skeleton=cfg.skeleton, max_people=4,
                progress=False)


def test_empty_set_stops(cfg, tmp_path):
    ann = write_dataset(tmp_path / "empty", split="train", images=0, seed=0)
    (tmp_path / "empty" / "train").mkdir(exist_ok=True)
    with pytest.raises(DataError, match="empty"):
        make_dataset(cfg, ann, tmp_path / "empty" / "train", tmp_path / "c", progress=False)


def test_val_split_refused_for_training_unless_allowed(cfg, synth, tmp_path):
    root, files = synth
    with pytest.raises(DataError, match="allow_eval_split"):
        make_dataset(cfg, files["val"], root / "val", tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="val"):
        make_dataset(cfg, "val2017", None, tmp_path / "c", progress=False)
    ds = make_dataset(cfg, files["val"], root / "val", tmp_path / "c", batch_size=1,
                      allow_eval_split=True, progress=False)
    assert next(iter(ds))[0].shape[0] == 1
    make_dataset(cfg, files["val"], root / "val", tmp_path / "c", training=False, progress=False)


def test_coco_mini(coco_mini_annotations, tmp_path):
    cfg = load_config("tiny")
    images = coco_mini_annotations.parents[1] / "train2017"
    ds = make_dataset(cfg, coco_mini_annotations, images, tmp_path / "c", batch_size=2,
                      progress=False)
    x, t = next(iter(ds))
    assert x.shape == (2, 129, 129, 3)
    prepared = prepare(coco_mini_annotations, images, tmp_path / "c", skeleton=cfg.skeleton,
                       max_people=cfg.codec.max_people, progress=False)
    assert len(prepared) == 80 and int(prepared.counts.sum()) == 86


def test_targets_of_the_people_present_equal_those_of_the_padded_rows(cfg, synth, tmp_path):
    from strongpose.data_generator import present_people
    from strongpose.targets import TargetEncoder

    encoder = TargetEncoder.from_config(cfg)
    h = (SIZE - 1) // 8 + 1
    _, inputs = next(iter(_ds(cfg, synth, tmp_path / "c", seed=2, batch_size=4, with_targets=False)))
    for b in range(4):
        one = {key: value[b] for key, value in inputs.items()}
        full, cut = encoder(one, (h, h)), encoder(present_people(one), (h, h))
        assert present_people(one)["keypoints"].shape[0] == max(int(one["num_people"]), 1)
        for key in full:
            np.testing.assert_array_equal(cut[key].numpy(), full[key].numpy(), err_msg=key)


def test_augmented_targets_decode_to_the_augmented_people(cfg, synth, tmp_path):
    """Augment (scale, rotation, shift, flip), encode, decode: every person whose labelled
    keypoints are still in the crop comes back within a pixel."""
    from strongpose.post_proc import Decoder
    kw = dict(training=True, augment=True, batch_size=4, seed=11)
    ds_in = _ds(cfg, synth, tmp_path / "c", with_targets=False, **kw)
    ds_t = _ds(cfg, synth, tmp_path / "c", **kw)
    decoder = Decoder.from_config(cfg)
    checked = 0
    for (img_a, inputs), (img_b, targets) in zip(ds_in.take(3), ds_t.take(3)):
        np.testing.assert_array_equal(img_a.numpy(), img_b.numpy())
        for b in range(int(img_a.shape[0])):
            people = decoder({key: targets[key][b].numpy()
                              for key in ("heatmap", "short", "mid", "long", "body")})
            for gt in inputs["keypoints"][b, :int(inputs["num_people"][b])].numpy():
                lab = gt[:, 2] > 0
                if not lab.any():
                    continue
                dist = [np.abs(p.keypoints[lab, :2] - gt[lab, :2]).max() for p in people]
                assert dist and min(dist) <= 1.0, (b, dist)
                checked += 1
    assert checked >= 5


def test_targets_encoded_in_the_train_step_equal_the_pipeline_s(cfg, synth, tmp_path):
    """TrainStepTargets on a batch of target inputs gives the pipeline's targets, and the
    training model's loss with it equals the loss on the pipeline's targets."""
    import keras
    from strongpose.data_generator import TrainStepTargets
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model
    from strongpose.training import TrainingModel

    kw = dict(seed=4, batch_size=3)
    images, inputs = next(iter(_ds(cfg, synth, tmp_path / "c", with_targets=False, **kw)))
    images_t, targets = next(iter(_ds(cfg, synth, tmp_path / "c", **kw)))
    np.testing.assert_array_equal(images.numpy(), images_t.numpy())
    encode = TrainStepTargets.from_config(cfg)
    encoded = encode(inputs)
    for key in targets:
        np.testing.assert_array_equal(encoded[key].numpy(), targets[key].numpy(), err_msg=key)
    keras.utils.set_random_seed(0)
    network = build_model(cfg, training_outputs=True)
    loss = StrongPoseLoss.from_config(cfg)
    in_step = TrainingModel(network, loss, target_encoder=encode)
    plain = TrainingModel(network, loss)
    y_pred = network(images, training=False)
    a = float(in_step.compute_loss(images, inputs, y_pred))
    b = float(plain.compute_loss(images, targets, y_pred))
    assert np.isfinite(a) and a == pytest.approx(b, rel=1e-6)


def test_jpeg_decoded_as_opencv_reads_it(tmp_path):
    """Training sees the pixels that inference (OpenCV) sees: exact JPEG decoding."""
    import cv2
    import tensorflow as tf
    from strongpose.data_generator import decode_image_bytes
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 0)
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    expected = cv2.imread(str(path))[..., ::-1]
    got = decode_image_bytes(tf.constant(path.read_bytes())).numpy()
    assert got.shape == expected.shape and np.array_equal(got, expected)
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), image)
    assert np.array_equal(decode_image_bytes(tf.constant(png.read_bytes())).numpy(), image[..., ::-1])
