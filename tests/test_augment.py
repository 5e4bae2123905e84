"""strongpose.augment: one random affine + flip + colour jitter of a training example."""

import numpy as np
import pytest
import tensorflow as tf

from strongpose import synthetic
from strongpose.augment import Augmenter, crop_transform
from strongpose.config import Config, load_config
from strongpose.skeleton import Skeleton

SKELETON = Skeleton()
K = SKELETON.num_keypoints
S = 401
NAMES = list(SKELETON.names)
LEFT_WRIST, RIGHT_WRIST = NAMES.index("left_wrist"), NAMES.index("right_wrist")
NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def _example(h=480, w=640, p=4, n=3, seed=0):
    """Random image; keypoints on a 40 px grid (sub-pixel), rows >= n are padding."""
    rng = np.random.default_rng(seed)
    cells = [(x, y) for y in range(40, h - 39, 40) for x in range(40, w - 39, 40)]
    pick = rng.permutation(len(cells))[:p * K]
    xy = np.array([cells[i] for i in pick], np.float32) + rng.uniform(-4, 4, (p * K, 2))
    kp = np.concatenate([xy, np.full((p * K, 1), 2.0)], 1).reshape(p, K, 3).astype(np.float32)
    kp[n:] = 0
    kp[0, 3, 2] = 0                       # an unlabelled keypoint
    inst = np.zeros((h, w), np.int32)
    for j in range(n):
        x0, y0 = kp[j, :, :2].min(0).astype(int)
        inst[y0:y0 + 30, x0:x0 + 30] = j + 1
    return dict(image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), instance_map=inst,
                crowd_mask=(rng.random((h, w)) < 0.1).astype(np.uint8),
                unannotated_mask=np.zeros((h, w), np.uint8), keypoints=kp, num_people=n)


def _np(out):
    return {k: v.numpy() for k, v in out.items()}


def test_shapes_dtypes_eager_and_dataset_map():
    aug = Augmenter.from_config(Config())
    assert (aug.input_size, aug.scale_range, aug.flip_probability) == (401, (0.7, 1.3), 0.5)
    ex = _example()
    want = {"image": ((S, S, 3), tf.float32), "instance_map": ((S, S), tf.int32),
            "crowd_mask": ((S, S), tf.uint8), "unannotated_mask": ((S, S), tf.uint8),
            "keypoints": ((4, K, 3), tf.float32), "num_people": ((), tf.int32),
            "person_masks": ((4, S, S), tf.uint8), "matrix": ((3, 3), tf.float32),
            "flipped": ((), tf.bool)}
    out = aug(ex, tf.constant([3, 4]))
    assert {k: (tuple(v.shape), v.dtype) for k, v in out.items()} == want
    img = out["image"].numpy()
    assert 0 <= img.min() and img.max() <= 255 and img.max() > 100

    # Graph mode, unknown image size, extra keys passed through.
    def gen():
        for i, (h, w) in enumerate([(480, 640), (480, 360)]):
            e = _example(h, w, seed=i)
            e["has_mask"] = np.ones(4, bool)
            yield e
    sig = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
           "instance_map": tf.TensorSpec((None, None), tf.int32),
           "crowd_mask": tf.TensorSpec((None, None), tf.uint8),
           "unannotated_mask": tf.TensorSpec((None, None), tf.uint8),
           "keypoints": tf.TensorSpec((4, K, 3), tf.float32),
           "num_people": tf.TensorSpec((), tf.int32), "has_mask": tf.TensorSpec((4,), tf.bool)}
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).enumerate().map(
        lambda i, e: aug(e, tf.stack([i, tf.constant(7, tf.int64)])))
    spec = ds.element_spec
    for key, (shape, dtype) in want.items():
        assert tuple(spec[key].shape) == shape and spec[key].dtype == dtype, key
    assert tuple(spec["has_mask"].shape) == (4,)
    got = list(ds.as_numpy_iterator())
    assert len(got) == 2
    # The graph gives what eager gives for the same seed.
    eager = _np(aug(_example(480, 640, seed=0), tf.constant([0, 7], tf.int64)))
    for key in ("image", "instance_map", "keypoints", "matrix"):
        np.testing.assert_allclose(got[0][key], eager[key], atol=1e-3, err_msg=key)


def test_deterministic_per_seed():
    aug = Augmenter(SKELETON, S)
    ex = _example()
    a, b = _np(aug(ex, [5, 6])), _np(aug(ex, tf.constant([5, 6])))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = _np(aug(ex, [5, 7]))
    assert not np.array_equal(a["matrix"], c["matrix"])
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["keypoints"], c["keypoints"])


def _dots(h, w, kp, sigma=2.0):
    """A black image with a Gaussian dot at every keypoint (all three channels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w), np.float32)
    for x, y in kp.reshape(-1, 3)[:, :2]:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat((np.clip(img, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)


def test_keypoints_land_on_their_dots():
    ex = _example(n=4)
    ex["keypoints"][:, :, 2] = 2.0
    ex["image"] = _dots(480, 640, ex["keypoints"])
    aug = Augmenter(SKELETON, S, **NO_JITTER)
    checked, flips, worst = 0, set(), 0.0
    for seed in range(6):
        out = _np(aug(ex, [seed, 1]))
        flips.add(bool(out["flipped"]))
        img = out["image"][..., 0]
        for x, y, v in out["keypoints"].reshape(-1, 3):
            cx, cy = int(round(x)), int(round(y))
            if v == 0 or not (5 <= cx < S - 5 and 5 <= cy < S - 5):
                continue
            win = img[cy - 4:cy + 5, cx - 4:cx + 5].astype(np.float64)
            yy, xx = np.mgrid[cy - 4:cy + 5, cx - 4:cx + 5]
            assert win.sum() > 0
            px, py = (win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()
            assert np.hypot(px - x, py - y) < 0.2, (seed, x, y, px, py)
            worst = max(worst, np.hypot(px - x, py - y))
            checked += 1
    assert checked > 150 and flips == {True, False}
    print(f"dots: {checked} keypoints, worst centroid error {worst:.3f} px")


def _synthetic_example(p=8):
    for index in range(50):
        s = synthetic.render_image(3, index, synthetic.SynthOptions(size=(240, 320)))
        people = [q for q in s.people if q.annotation["iscrowd"] == 0]
        if len(people) >= 2 and sum(int((q.keypoints[:, 2] > 0).sum()) for q in people) >= 15:
            break
    h, w = s.image.shape[:2]
    inst = np.zeros((h, w), np.int32)
    kp = np.zeros((p, K, 3), np.float32)
    for j, q in enumerate(people):
        inst[q.mask > 0] = j + 1
        kp[j] = q.keypoints
    return dict(image=s.image[..., ::-1].copy(), instance_map=inst, keypoints=kp,
                num_people=len(people))


def test_keypoints_stay_on_their_person():
    ex = _synthetic_example()
    inst, kp = ex["instance_map"], ex["keypoints"]
    on_label = np.zeros(kp.shape[:2], bool)
    for j in range(ex["num_people"]):
        for k in range(K):
            x, y, v = kp[j, k]
            on_label[j, k] = v > 0 and inst[int(round(y)), int(round(x))] == j + 1
    assert on_label.sum() >= 10
    aug = Augmenter(SKELETON, 201)
    for seed in range(4):
        out = _np(aug(ex, [seed, 9]))
        okp, oinst = out["keypoints"], out["instance_map"]
        if out["flipped"]:
            on = on_label[:, list(SKELETON.flip_permutation)]
        else:
            on = on_label
        for j, k in zip(*np.nonzero(on)):
            x, y, v = okp[j, k]
            if v == 0:
                continue
            cx, cy = int(round(x)), int(round(y))
            near = oinst[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2]
            assert (near == j + 1).any(), (seed, j, k)
        # person_masks are the instance map's people.
        for j in range(8):
            np.testing.assert_array_equal(out["person_masks"][j], oinst == j + 1)


def test_flip_swaps_left_right_and_mirrors_x():
    ex = _example()
    kw = dict(rotation_deg=0.0, max_shift=0.0, **NO_JITTER)
    flipped = _np(Augmenter(SKELETON, S, flip_probability=1.0, **kw)(ex, [1, 2]))
    plain = _np(Augmenter(SKELETON, S, flip_probability=0.0, **kw)(ex, [1, 2]))
    assert flipped["flipped"] and not plain["flipped"]
    np.testing.assert_allclose(flipped["image"], plain["image"][:, ::-1], atol=0.05)
    fk, pk = flipped["keypoints"], plain["keypoints"]
    np.testing.assert_allclose(fk[:, LEFT_WRIST, 0], S - 1 - pk[:, RIGHT_WRIST, 0], atol=1e-3)
    np.testing.assert_allclose(fk[:, LEFT_WRIST, 1], pk[:, RIGHT_WRIST, 1], atol=1e-3)
    perm = list(SKELETON.flip_permutation)
    np.testing.assert_array_equal(fk[..., 2], pk[:, perm, 2])
    assert (flipped["instance_map"] != plain["instance_map"][:, ::-1]).mean() < 0.005
    # Against flip_keypoints' convention, with the matrix: x -> W-1-x in the input.
    m = flipped["matrix"]
    x, y = ex["keypoints"][0, RIGHT_WRIST, :2]
    np.testing.assert_allclose(fk[0, LEFT_WRIST, :2], (m @ [x, y, 1.0])[:2], atol=1e-3)
    np.testing.assert_allclose(m @ [639 - x, y, 1.0], plain["matrix"] @ [x, y, 1.0], atol=1e-3)


def test_out_of_crop_keypoints_get_v0():
    ex = _example()
    out = _np(Augmenter(SKELETON, S, scale_range=(3.0, 3.0))(ex, [4, 4]))
    xy, v = out["keypoints"][..., :2], out["keypoints"][..., 2]
    inside = ((xy >= 0) & (xy <= S - 1)).all(-1)
    assert (v[~inside] == 0).all()
    labelled = ex["keypoints"][..., 2] > 0
    assert (v[inside & labelled] > 0).all()
    assert (inside & labelled).sum() > 0 and (~inside & labelled).sum() > 0


def test_identity_mode_is_resize_and_pad():
    h, w = 321, 641                       # 400/640 = 0.625: the height becomes 201 rows
    ex = _example(h, w)
    aug = Augmenter.from_config(Config(), augment=False)
    out = _np(aug(ex, [1, 2]))
    other = _np(aug(ex, [8, 9]))
    np.testing.assert_array_equal(out["image"], other["image"])
    resized = tf.compat.v1.image.resize(tf.cast(ex["image"], tf.float32), [201, 401],
                                        align_corners=True).numpy()
    want = np.zeros((S, S, 3), np.float32)
    want[:201] = resized                  # at the top-left, as the Predictor places it
    np.testing.assert_allclose(out["image"], want, atol=0.05)
    np.testing.assert_allclose(out["matrix"], [[0.625, 0, 0], [0, 0.625, 0], [0, 0, 1]], atol=1e-5)
    kp = ex["keypoints"]
    np.testing.assert_allclose(out["keypoints"][..., 0], kp[..., 0] * 0.625, atol=1e-3)
    np.testing.assert_allclose(out["keypoints"][..., 1], kp[..., 1] * 0.625, atol=1e-3)
    np.testing.assert_array_equal(out["keypoints"][..., 2], kp[..., 2])
    assert not out["flipped"]
    t = crop_transform(out["matrix"], w, h)
    np.testing.assert_allclose(t.to_original(out["keypoints"][0, :, :2]), kp[0, :, :2], atol=1e-3)
    # A 640x480 image: masks warped with nearest neighbour.
    out = _np(aug(_example(), [0, 0]))
    assert set(np.unique(out["instance_map"])) <= {0, 1, 2, 3}


def test_identity_mode_is_the_predictors_input():
    """A network trained without augmentation sees what the Predictor gives it (an
    overfitted one scored AP 0.92 on centred crops and 0.43 as the Predictor placed them)."""
    from strongpose.predictor import prepare

    ex = _example(321, 641)
    out = _np(Augmenter.from_config(Config(), augment=False)(ex, [1, 2]))
    x, t = prepare(ex["image"].astype(np.uint8), S, 8)
    assert x.shape[1] == S and x.shape[0] < S
    np.testing.assert_allclose(out["image"][:x.shape[0]], x, atol=0.5)
    assert (out["image"][x.shape[0]:] == 0).all()
    np.testing.assert_allclose(crop_transform(out["matrix"], 641, 321).to_input([[10.0, 20.0]]),
                               t.to_input([[10.0, 20.0]]), atol=1e-4)


def test_from_config_reads_data_section():
    cfg = load_config(None, ["data.scale_range=[0.9, 1.1]", "data.rotation_deg=10",
                             "data.flip_probability=0.25", "model.input_size=257"])
    aug = Augmenter.from_config(cfg)
    assert (aug.input_size, aug.scale_range, aug.rotation_deg, aug.flip_probability) == \
        (257, (0.9, 1.1), 10.0, 0.25)
    assert aug.augment and not Augmenter.from_config(cfg, augment=False).augment


def test_bad_inputs_raise_value_error():
    aug = Augmenter(SKELETON, S)
    ex = _example()
    bad = [
        ("image", ex["image"][..., 0], "image must be"),
        ("image", ex["image"][..., :2], "image must be"),
        ("instance_map", ex["instance_map"][None], "instance_map must be"),
        ("instance_map", ex["instance_map"].astype(np.float32), "must be integer"),
        ("crowd_mask", ex["crowd_mask"][:100], "same size"),
        ("keypoints", ex["keypoints"][0], "keypoints must be"),
        ("keypoints", ex["keypoints"][:, :16], "keypoints must be"),
        ("keypoints", ex["keypoints"][..., :2], "keypoints must be"),
        ("num_people", np.array([3]), "num_people"),
    ]
    for key, value, msg in bad:
        with pytest.raises(ValueError, match=msg):
            aug({**ex, key: value}, [0, 0])
    with pytest.raises(ValueError, match="lacks"):
        aug({k: v for k, v in ex.items() if k != "keypoints"}, [0, 0])
    with pytest.raises(ValueError, match="seed"):
        aug(ex, [0, 0, 0])
    for kwargs in (dict(input_size=400.5), dict(scale_range=(1.2, 0.8)), dict(rotation_deg=-1.0),
                   dict(flip_probability=1.5), dict(mask_factor=3), dict(hue=0.7)):
        with pytest.raises(ValueError):
            Augmenter(SKELETON, **{"input_size": S, **kwargs})


def test_colour_jitter():
    ex = _example()
    geo = dict(scale_range=(1.0, 1.0), rotation_deg=0.0, max_shift=0.0)
    # Grey stays grey under saturation and hue; the fill outside the image stays 0.
    grey = {**ex, "image": np.full_like(ex["image"], 128)}
    out = _np(Augmenter(SKELETON, S, brightness=0.0, contrast=0.5, saturation=0.5, hue=0.2,
                        **geo)(grey, [3, 3]))["image"]
    assert np.isclose(out[200, 200], 128, atol=0.05).all() and (out[0] == 0).all()
    # Hue and saturation keep the luma; the colours change.
    ex["image"] = (80 + ex["image"] // 3).astype(np.uint8)
    plain = _np(Augmenter(SKELETON, S, **NO_JITTER, **geo)(ex, [2, 2]))["image"]
    for kw in (dict(hue=0.1), dict(saturation=0.5)):
        jit = _np(Augmenter(SKELETON, S, **{**NO_JITTER, **kw}, **geo)(ex, [2, 2]))["image"]
        luma = np.array([0.299, 0.587, 0.114], np.float32)
        np.testing.assert_allclose(jit @ luma, plain @ luma, atol=0.05)
        assert np.abs(jit - plain).max() > 0.5
    # Brightness shifts every channel by one amount, inside the image only.
    jit = _np(Augmenter(SKELETON, S, **{**NO_JITTER, "brightness": 0.1}, **geo)(ex, [2, 2]))["image"]
    diff = (jit - plain)[100:300]
    assert np.abs(diff.std()) < 0.05 and 0 < abs(diff.mean()) <= 25.5 + 0.05
    assert (jit[0] == 0).all()


def test_masks_on_grid_equal_the_crop_read_at_every_fth_pixel():
    ex = _synthetic_example()
    ex["crowd_mask"] = (ex["instance_map"] == 1).astype(np.uint8)
    for seed in (3, 4, 5):
        full = Augmenter(SKELETON, 129, mask_factor=8)(ex, tf.constant([seed, 9]))
        grid = Augmenter(SKELETON, 129, mask_factor=8, masks_on_grid=True)(ex, tf.constant([seed, 9]))
        for key in ("instance_map", "crowd_mask", "unannotated_mask"):
            assert grid[key].shape == (17, 17)
            np.testing.assert_array_equal(grid[key], full[key][::8, ::8])
        np.testing.assert_array_equal(grid["person_masks"], full["person_masks"])
        np.testing.assert_array_equal(grid["image"], full["image"])


def _whole_crop_warp(image, matrix):
    """The reference: the whole (S, S) crop warped at once (bilinear, fill 0)."""
    inverse = np.linalg.inv(np.asarray(matrix, np.float64))
    inverse = (inverse / inverse[2, 2]).astype(np.float32).reshape(9)[:8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=inverse[None],
        output_shape=[S, S], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0].numpy()


def test_image_warped_over_its_box_equals_the_whole_crop_warp():
    ex = _example(360, 520)
    for kwargs in (dict(), dict(max_shift=0.9), dict(max_shift=5.0), dict(scale_range=(3.0, 3.0))):
        aug = Augmenter(SKELETON, S, **NO_JITTER, **kwargs)
        for seed in range(4):
            out = _np(aug(ex, [seed, 1]))
            np.testing.assert_allclose(out["image"], _whole_crop_warp(ex["image"], out["matrix"]),
                                       atol=0.05)


def test_jitter_on_the_crop_is_jitter_on_the_source_and_keeps_the_fill_zero():
    from strongpose import augment

    ex = _example()
    ex["image"] = (80 + ex["image"] // 3).astype(np.uint8)      # 80..165: no clipping
    aug = Augmenter(SKELETON, S)
    for seed in ([0, 3], [1, 3], [2, 3]):
        out = _np(aug(ex, seed))
        seeds = tf.random.experimental.stateless_split(tf.constant(seed, tf.int64),
                                                       num=augment._NUM_SEEDS)
        mean = ex["image"][::augment._MEAN_STEP, ::augment._MEAN_STEP].reshape(-1, 3).mean(0)
        shift, colour = (t.numpy() for t in augment._jitter_params(
            aug, tf.constant(mean, tf.float32), seeds))
        jittered = (ex["image"].astype(np.float32) + shift) @ colour     # on the whole source
        want = _whole_crop_warp(jittered, out["matrix"])
        np.testing.assert_allclose(out["image"], want, atol=0.05)
        outside = _whole_crop_warp(np.ones_like(jittered), out["matrix"]) == 0
        assert outside.any() and (out["image"][outside] == 0).all()
        assert (out["image"][~outside] > 0).all()
        assert np.abs(jittered - ex["image"]).max() > 1.0          # the jitter did something
