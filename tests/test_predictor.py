"""strongpose.predictor: resize/pad transform, flip and multi-scale merging, loading, decoding."""

import numpy as np
import pytest

from strongpose import geometry
from strongpose.coco import CocoKeypoints
from strongpose.config import load_config
from strongpose.images import ImageError, read_image
from strongpose.predictor import (Predictor, find_weights, fit_transform, full_size_mask,
                                  load_network, merge_scales, prepare, rescale_people)
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
    assert s["network_s"] > 0 and s["decode_s"] > 0


HUGE = (6000, 8000)          # (H, W): downscaled on reading to 3072 x 4096


@pytest.fixture(scope="module")
def huge_case(cfg, tmp_path_factory):
    """A 97 x 129 synthetic scene (the network input of a 6000 x 8000 picture at input
    size 129) and a stub that returns its exact maps whatever the input's content."""
    root = tmp_path_factory.mktemp("huge")
    t, _, padded = fit_transform(*HUGE, SIZE, cfg.eval_output_stride)
    assert padded == (97, 129)
    ann = write_dataset(root, split="val", images=1, size=padded, people=(2, 2), seed=5,
                        crowd_rate=0.0, empty_rate=0.0, mask_only_rate=0.0, unlabelled_rate=0.0)
    coco = CocoKeypoints(ann, image_dir=root / "val")
    i = coco.image_ids[0]
    gt = coco.ground_truth(i, cfg.skeleton, cfg.codec.max_people)
    known = _stub(cfg, coco, [i], flip=False)
    maps = next(iter(known.known.values()))
    network = lambda x: {k: np.repeat(v[None], len(x), 0) for k, v in maps.items()}  # noqa: E731
    return gt, network


def test_huge_image_people_come_back_in_the_files_pixels(cfg, huge_case):
    gt, network = huge_case
    huge = next(Predictor(network, cfg).predict([np.full(HUGE + (3,), 90, np.uint8)]))
    assert huge.image.shape == (3072, 4096, 3) and huge.source_scale == pytest.approx(0.512)
    assert huge.size == HUGE and len(huge.people) == gt.num_people
    # Input pixel x is original pixel x * (W - 1) / 128 (align-corners overall; the two
    # resizes agree with this to about one original pixel).
    expected = gt.keypoints[:gt.num_people, :, :2] * np.float32((HUGE[1] - 1) / (SIZE - 1))
    found = np.array([p.keypoints[:, :2] for p in huge.people])
    labelled = gt.keypoints[:gt.num_people, :, 2] > 0
    for kp, seen in zip(expected, labelled):
        err = np.linalg.norm(found - kp[None], axis=-1)[:, seen].mean(axis=1)
        assert err.min() < 2.0 * (HUGE[1] - 1) / (SIZE - 1)     # 2 input pixels, ~125 here
    for p in huge.people:
        x, y, w, h = p.box
        kps = p.keypoints[p.keypoints[:, 2] > 0, :2]
        assert (kps >= np.array([x, y]) - 1).all() and (kps <= np.array([x + w, y + h]) + 1).all()
        assert p.mask.shape == (3072, 4096) and p.mask.any()      # masks: the downscaled size
        assert full_size_mask(p.mask, huge.size).shape == HUGE
    # For drawing on the downscaled image: the same people in its pixels.
    drawn = huge.people_in_image()
    np.testing.assert_allclose(drawn[0].keypoints[:, :2],
                               (huge.people[0].keypoints[:, :2] + 0.5) * 0.512 - 0.5, atol=1e-2)
    ys, xs = np.nonzero(drawn[0].mask)
    bx, by, bw, bh = drawn[0].box
    assert bx <= xs.min() + 1 and xs.max() <= bx + bw + 1 and by <= ys.min() + 1 and ys.max() <= by + bh + 1


def test_rescale_people_round_trips():
    from strongpose.post_proc import Person
    kps = np.array([[10.0, 20.0, 0.9], [4000.0, 3000.0, 0.5]], np.float32)
    p = Person(keypoints=kps.copy(), score=0.7, box=(10.0, 20.0, 3990.0, 2980.0))
    there = rescale_people([p], (6000, 8000), (3072, 4096))[0]
    back = rescale_people([there], (3072, 4096), (6000, 8000))[0]
    np.testing.assert_allclose(back.keypoints, kps, atol=1e-2)
    np.testing.assert_allclose(back.box, p.box, atol=1e-2)
    assert there.keypoints[1, 0] == pytest.approx(4000.5 * 0.512 - 0.5)
    np.testing.assert_array_equal(p.keypoints, kps)          # the input is not changed


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
