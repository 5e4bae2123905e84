"""strongpose.predictor: resize/pad transform, flip and multi-scale merging, loading, decoding."""

import numpy as np
import pytest

from strongpose import geometry
from strongpose.coco import CocoKeypoints
from strongpose.config import load_config
from strongpose.images import ImageError, read_image
from strongpose.predictor import (Predictor, find_weights, fit_transform, load_network,
                                  merge_scales, prepare)
from strongpose.synthetic import write_dataset
from stub_network import TargetsNetwork

SIZE = 129     # 8*16 + 1: synthetic images run at scale 1, no resize, no padding


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", [f"model.input_size={SIZE}"])


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ann = write_dataset(root, split="val", images=4, size=SIZE, people=(1, 3), seed=3,
                        crowd_rate=0.0, empty_rate=0.0, mask_only_rate=0.0, unlabelled_rate=0.0)
    return CocoKeypoints(ann, image_dir=root / "val")


def _stub(cfg, coco, ids, flip=True):
    net = TargetsNetwork(cfg, stride=cfg.eval_output_stride)
    for i in ids:
        net.add(read_image(coco.image_path(i)), coco.ground_truth(i, cfg.skeleton, cfg.codec.max_people), flip)
    return net


@pytest.mark.parametrize("h, w, long_side", [(100, 150, 129), (480, 640, 401), (6000, 8000, 129), (2, 3, 33)])
def test_prepare_puts_original_points_where_the_transform_says(h, w, long_side):
    image = np.zeros((h, w, 3), np.uint8)
    y, x = int(h * 0.6), int(w * 0.3)
    image[max(0, y - h // 20):y + h // 20 + 1, max(0, x - w // 20):x + w // 20 + 1] = 255
    inp, t = prepare(image, long_side, 8)
    assert inp.shape[0] % 8 == 1 and inp.shape[1] % 8 == 1 and max(inp.shape[:2]) == long_side
    assert (t.original_width, t.original_height) == (w, h)
    ys, xs = np.nonzero(inp[..., 0] > 127)
    centre = np.array([xs.mean(), ys.mean()])
    tol = max(1.0, t.scale)
    np.testing.assert_allclose(centre, t.to_input(np.array([x, y])), atol=tol)


def test_merge_scales_brings_maps_and_offsets_to_the_first_grid():
    # Maps that are linear in original pixels, and an offset of 10 original pixels: exact.
    stride, shape = 8, (300, 200)
    per, ts = [], []
    for long_side in (129, 201):
        t, _, (ph, pw) = fit_transform(*shape, long_side, stride)
        h, w = geometry.map_size(ph, stride), geometry.map_size(pw, stride)
        gx, gy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
        orig = t.to_original(np.stack([gx, gy], -1))
        heat = np.repeat((0.001 * orig[..., :1] + 0.002 * orig[..., 1:]), 17, -1)
        short = np.full((h, w, 34), 10.0 * t.scale, np.float32)
        per.append({"heatmap": heat.astype(np.float32), "short": short})
        ts.append(t)
    merged = merge_scales(per, ts, stride)
    inner = (slice(0, 18), slice(0, 11))     # cells inside the 129-side image at both scales
    np.testing.assert_allclose(merged["heatmap"][inner], per[0]["heatmap"][inner], atol=1e-4)
    np.testing.assert_allclose(merged["short"], per[0]["short"], rtol=1e-5)


def test_exact_maps_give_the_people_with_and_without_flip(cfg, synth_set):
    ids = synth_set.image_ids[:2]
    net = _stub(cfg, synth_set, ids)
    paths = [str(synth_set.image_path(i)) for i in ids]
    plain = list(Predictor(net, cfg).predict(paths, batch_size=2))
    flipped = list(Predictor(net, cfg, flip=True).predict(paths, batch_size=2))
    assert [p.source for p in plain] == paths
    for i, a, b in zip(ids, plain, flipped):
        gt = synth_set.ground_truth(i, cfg.skeleton, cfg.codec.max_people)
        assert len(a.people) == gt.num_people == len(b.people)
        for pa, pb in zip(a.people, b.people):
            np.testing.assert_allclose(pa.keypoints[:, :2], pb.keypoints[:, :2], atol=0.05)
        found = np.array([p.keypoints[:, :2] for p in a.people])
        for kp in gt.keypoints[:gt.num_people]:
            err = np.linalg.norm(found - kp[None, :, :2], axis=-1)[:, kp[:, 2] > 0]
            assert err.mean(axis=1).min() < 2.0     # one decoded person is this one
    # Flip really ran the mirrored input: a stub that knows only the unmirrored image fails.
    with pytest.raises(KeyError):
        Predictor(_stub(cfg, synth_set, ids[:1], flip=False), cfg, flip=True)(paths[0])


def test_bad_inputs_raise_or_are_reported(cfg, synth_set, tmp_path):
    net = _stub(cfg, synth_set, synth_set.image_ids[:1])
    good = str(synth_set.image_path(synth_set.image_ids[0]))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        Predictor(net, cfg)(str(bad))
    errors = []
    out = list(Predictor(net, cfg).predict([str(bad), good, np.zeros((1, 1, 3), np.uint8)],
                                           on_error=lambda name, err: errors.append(name)))
    assert [p.source for p in out] == [good] and len(errors) == 2


def test_load_from_training_folder_and_weights_file(cfg, tmp_path):
    import yaml
    from strongpose.model import build_model
    model = build_model(cfg, training_outputs=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    model.save_weights(str(tmp_path / "model.weights.h5"))
    image = (np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)
    inp, _ = prepare(image, SIZE, 8)
    expected = model(inp[None], training=False)["heatmap_logits"].numpy()
    network, loaded_cfg = load_network(tmp_path)      # the folder: config.yaml + model.weights.h5
    assert loaded_cfg.model.backbone == "tiny"
    np.testing.assert_allclose(network(inp[None])["heatmap_logits"], expected, atol=1e-4)
    assert find_weights(tmp_path, "best").name == "model.weights.h5"   # falls back to the other
    with pytest.raises(FileNotFoundError, match="train.py"):
        find_weights(tmp_path / "nothing_here")
    with pytest.raises(ValueError, match="config"):
        load_network(_moved(tmp_path))


def _moved(folder):
    other = folder / "alone"
    other.mkdir()
    (other / "m.weights.h5").write_bytes((folder / "model.weights.h5").read_bytes())
    return other / "m.weights.h5"


def test_untrained_network_runs_end_to_end(cfg):
    predictor = Predictor.from_config(cfg, scales=(1.0, 0.5), flip=True, keep_maps=True)
    image = (np.random.default_rng(0).random((60, 90)) * 255).astype(np.uint8)   # grayscale
    results = list(predictor.predict([image, image[:, :40]], batch_size=2))
    for r in results:
        assert r.maps["heatmap"].shape[-1] == 17
        for p in r.people:
            assert p.mask.shape == r.image.shape[:2]
            assert (p.keypoints[:, 0] <= r.image.shape[1] - 1).all()
    s = predictor.timing.summary()
    assert s["images"] == 2 and all(r.source_scale == 1.0 for r in results)
    huge = next(predictor.predict([np.full((6000, 8000, 3), 90, np.uint8)]))
    assert huge.image.shape == (3072, 4096, 3) and huge.source_scale == pytest.approx(0.512)
    assert all(p.mask is None or p.mask.shape == (3072, 4096) for p in huge.people) and s["network_s"] > 0 and s["decode_s"] > 0


@pytest.mark.slow
def test_load_keras_file(cfg, tmp_path):
    import yaml
    from strongpose.predictor import load_keras_model
    model = load_keras_model(cfg, None)
    model.save(str(tmp_path / "m.keras"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    x, _ = prepare(np.full((40, 60, 3), 100, np.uint8), SIZE, 8)
    network, _ = load_network(tmp_path / "m.keras")
    np.testing.assert_allclose(network(x[None])["mid"], model(x[None])["mid"].numpy(), atol=1e-4)
