"""Model: bilinear sampler and refinement against hand computations; network shapes, saving,
mixed precision, custom skeletons."""

import numpy as np
import pytest
import tensorflow as tf

from strongpose.model import (OffsetRefinement, bilinear_sample, cell_points, refine_long,
                              refine_mid)

S = 8  # output stride used by the op tests


# ------------------------------------------------------------------ sampler
def test_cell_points_follow_align_corners_geometry():
    pts = cell_points(2, 3, S).numpy()
    assert pts.shape == (2, 3, 2)
    np.testing.assert_array_equal(pts[1, 2], [16.0, 8.0])  # cell (i, j) = (1, 2) -> (x, y) = (s*j, s*i)
    np.testing.assert_array_equal(pts[0, 1], [8.0, 0.0])


def test_bilinear_sample_matches_hand_computation():
    # One item, one channel: 2x2 field [[0, 1], [2, 7]].
    field = np.array([[0.0, 1.0], [2.0, 7.0]], np.float32).reshape(1, 2, 2, 1, 1)
    points = np.zeros((1, 2, 2, 1, 2), np.float32)
    points[0, 0, 0, 0] = [0.5 * S, 0.5 * S]    # centre: mean of the four = 2.5
    points[0, 0, 1, 0] = [0.25 * S, 0.0]       # top edge: 0.75*0 + 0.25*1
    points[0, 1, 0, 0] = [1.0 * S, 0.75 * S]   # right edge: 0.25*1 + 0.75*7
    points[0, 1, 1, 0] = [0.25 * S, 0.5 * S]   # 0.5*(0.75*0 + 0.25*1) + 0.5*(0.75*2 + 0.25*7)
    out = bilinear_sample(field, points, S).numpy()[0, ..., 0, 0]
    expected = [[2.5, 0.25], [5.5, 0.5 * 0.25 + 0.5 * 3.25]]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_bilinear_sample_each_item_reads_its_own_field():
    h, w = 3, 4
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # Item n's field is linear: value = 10*i + j + 100*n (two channels: value, -value).
    base = np.stack([10.0 * i + j + 100.0 * n for n in range(3)], axis=-1)
    field = np.stack([base, -base], axis=-1)[None].astype(np.float32)   # (1, h, w, 3, 2)
    rng = np.random.default_rng(1)
    xy = rng.uniform([0, 0], [(w - 1) * S, (h - 1) * S], size=(1, h, w, 3, 2)).astype(np.float32)
    out = bilinear_sample(field, xy, S).numpy()
    exact = 10.0 * xy[..., 1] / S + xy[..., 0] / S + 100.0 * np.arange(3)
    np.testing.assert_allclose(out[..., 0], exact, rtol=1e-5)
    np.testing.assert_allclose(out[..., 1], -exact, rtol=1e-5)


def test_bilinear_sample_clamps_points_off_the_map():
    h, w = 3, 4
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    field = (10.0 * i + j).astype(np.float32).reshape(1, h, w, 1, 1)
    points = np.zeros((1, h, w, 1, 2), np.float32)
    points[0, 0, 0, 0] = [-100.0, 1000.0]        # -> cell (h-1, 0) = 20
    points[0, 0, 1, 0] = [1000.0, -5.0]          # -> cell (0, w-1) = 3
    points[0, 0, 2, 0] = [1.5 * S, -50.0]        # -> (x=1.5, y=0) = 1.5
    out = bilinear_sample(field, points, S).numpy()[0, 0, :3, 0, 0]
    np.testing.assert_allclose(out, [20.0, 3.0, 1.5])
    assert np.all(np.isfinite(bilinear_sample(field, points * 1e30, S).numpy()))


def test_bilinear_sample_gradients_finite_and_nonzero():
    field = tf.Variable(np.random.default_rng(0).normal(size=(2, 3, 3, 2, 2)).astype(np.float32))
    points = tf.Variable(np.random.default_rng(1).uniform(-4, 20, size=(2, 3, 3, 2, 2)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(bilinear_sample(field, points, S) ** 2)
    gf, gp = tape.gradient(y, [field, points])
    assert np.all(np.isfinite(gf.numpy())) and np.any(gf.numpy() != 0)
    assert np.all(np.isfinite(gp.numpy())) and np.any(gp.numpy() != 0)


# --------------------------------------------------------------- refinement
def _linear_short(h, w, kps):
    """Short offsets pointing exactly at fixed keypoints: S_k(q) = kp_k - q (linear in q)."""
    p = cell_points(h, w, S).numpy()
    return np.concatenate([np.asarray(k, np.float32) - p for k in kps], axis=-1)[None]


def test_refine_mid_constant_fields():
    """Constant short fields: every step adds S_b of the edge's target keypoint b."""
    h, w, edges = 4, 5, ((0, 1), (1, 2), (1, 0), (2, 1))
    short = np.zeros((1, h, w, 6), np.float32)
    for k, c in enumerate([(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)]):
        short[..., 2 * k:2 * k + 2] = c
    mid = np.full((1, h, w, 8), 3.0, np.float32)
    out = refine_mid(mid, short, edges, S, steps=2).numpy()
    for e, (_, b) in enumerate(edges):
        np.testing.assert_allclose(out[..., 2 * e:2 * e + 2], 3.0 + 2 * short[..., 2 * b:2 * b + 2])
    np.testing.assert_array_equal(refine_mid(mid, short, edges, S, steps=0), mid)


def test_refine_mid_linear_field_snaps_to_keypoint():
    """S_b(q) = kp_b - q: one step gives M'(p) = kp_b - p where p + M(p) is on the map."""
    h, w = 6, 7
    kps = [(10.0, 12.0), (33.0, 20.0)]
    short = _linear_short(h, w, kps)
    mid = np.zeros((1, h, w, 4), np.float32)
    mid[..., 0:2] = (3.0, -2.0)     # edge (0, 1)
    mid[..., 2:4] = (-5.0, 4.0)     # edge (1, 0)
    p = cell_points(h, w, S).numpy()
    for steps in (1, 2):
        out = refine_mid(mid, short, ((0, 1), (1, 0)), S, steps=steps).numpy()[0]
        inside = ((p + (3.0, -2.0)) >= 0).all(-1) & ((p + (3.0, -2.0)) <= ((w - 1) * S, (h - 1) * S)).all(-1)
        np.testing.assert_allclose(out[inside, 0:2], (np.array(kps[1]) - p)[inside], atol=1e-4)
        inside = ((p + (-5.0, 4.0)) >= 0).all(-1) & ((p + (-5.0, 4.0)) <= ((w - 1) * S, (h - 1) * S)).all(-1)
        np.testing.assert_allclose(out[inside, 2:4], (np.array(kps[0]) - p)[inside], atol=1e-4)


def test_refine_long_self_then_short():
    """L(q) = (kp - q)/2: self-refinement gives 0.75 (kp - p); the short step then snaps to kp - p."""
    h, w = 5, 6
    kps = [(12.0, 9.0), (30.0, 20.0)]
    short = _linear_short(h, w, kps)
    long = 0.5 * short
    p = cell_points(h, w, S).numpy()
    exact = np.concatenate([np.array(k) - p for k in kps], axis=-1)
    no_short = refine_long(long, np.zeros_like(short), S, steps=1).numpy()[0]
    np.testing.assert_allclose(no_short, 0.75 * exact, atol=1e-4)
    full = refine_long(long, short, S, steps=1).numpy()[0]
    np.testing.assert_allclose(full, exact, atol=1e-4)
    np.testing.assert_array_equal(refine_long(long, short, S, steps=0), long)


def test_offset_refinement_layer_scales_and_refines():
    h, w = 4, 4
    edges = ((0, 1), (1, 0))
    layer = OffsetRefinement(edges, output_stride=S, offset_scale=16.0,
                             mid_refine_steps=1, long_refine_steps=0)
    short = np.full((1, h, w, 4), 0.5, np.float16)            # -> 8 px
    mid = np.full((1, h, w, 4), 0.25, np.float16)             # -> 4 px, + S_b = 12
    long = np.full((1, h, w, 4), -1.0, np.float16)            # -> -16 px, no refinement
    s, m, l = layer([short, mid, long])
    assert s.dtype == m.dtype == l.dtype == tf.float32
    np.testing.assert_allclose(s, 8.0)
    np.testing.assert_allclose(m, 12.0)
    np.testing.assert_allclose(l, -16.0)
    clone = OffsetRefinement.from_config(layer.get_config())
    assert clone.directed_edges == edges and clone.offset_scale == 16.0
    assert clone.mid_refine_steps == 1 and clone.long_refine_steps == 0


# ------------------------------------------------------------------ network
import sys
import types

import keras

from strongpose.config import Config, load_config
from strongpose.losses import StrongPoseLoss
from strongpose.model import build_model, freeze_batchnorm
from strongpose.skeleton import Skeleton

ALL_KEYS = {"heatmap_logits", "short", "mid", "long", "body_logits",
            "inter_heatmap_logits", "inter_short"}


def _cfg(*overrides: str) -> Config:
    return load_config("tiny", list(overrides))


def _images(b=1, h=65, w=65, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (b, h, w, 3)).astype(np.float32)


def _channels(cfg):
    k, e = cfg.skeleton.num_keypoints, cfg.skeleton.num_edges
    return {"heatmap_logits": k, "short": 2 * k, "mid": 4 * e, "long": 2 * k, "body_logits": 1,
            "inter_heatmap_logits": k, "inter_short": 2 * k}


@pytest.mark.parametrize("stride,h,w", [(8, 65, 97), (16, 81, 49), (32, 65, 129)])
def test_output_keys_and_shapes(stride, h, w):
    cfg = _cfg()
    model = build_model(cfg, output_stride=stride)
    out = model(_images(2, h, w), training=False)
    assert set(out) == ALL_KEYS
    ch = _channels(cfg)
    for key, v in out.items():
        assert tuple(v.shape) == (2, (h - 1) // stride + 1, (w - 1) // stride + 1, ch[key]), key
        assert v.dtype == tf.float32
        assert np.all(np.isfinite(v.numpy()))
    assert ch["mid"] == 64 and ch["short"] == 34


def test_inference_outputs_only():
    out = build_model(_cfg(), training_outputs=False)(_images(), training=False)
    assert set(out) == set(ALL_KEYS) - {"inter_heatmap_logits", "inter_short"}
    out = build_model(_cfg("model.intermediate_supervision=false"))(_images(), training=False)
    assert "inter_short" not in out


def test_custom_skeleton_changes_channel_counts():
    sk = Skeleton(names=("head", "neck", "hip", "lknee", "rknee"),
                  edges=((0, 1), (1, 2), (2, 3), (2, 4)), flip_pairs=((3, 4),),
                  sigmas=(0.05,) * 5)
    cfg = Config(skeleton=sk, model=_cfg().model, codec=_cfg().codec)
    out = build_model(cfg)(_images(), training=False)
    got = {k: v.shape[-1] for k, v in out.items()}
    assert got == {"heatmap_logits": 5, "short": 10, "mid": 16, "long": 10, "body_logits": 1,
                   "inter_heatmap_logits": 5, "inter_short": 10}


def test_head_channels_adds_a_3x3_conv():
    model = build_model(_cfg("model.head_channels=8"))
    conv = model.get_layer("head_conv")
    assert conv.kernel.shape == (3, 3, 64 * 4, 8)
    assert model.get_layer("heatmap_logits_head").kernel.shape == (1, 1, 8, 17)
    assert model.get_layer("inter_head_conv") is not None
    out = model(_images(), training=False)
    assert out["mid"].shape == (1, 9, 9, 64)


def test_offset_heads_are_scaled_by_disk_radius():
    cfg = _cfg("model.mid_refine_steps=0", "model.long_refine_steps=0")
    model = build_model(cfg)
    x = _images()
    out = model(x, training=False)
    feats = model.get_layer("resnet_v2")(model.get_layer("preprocess")(x))["features"]
    raw = model.get_layer("short_head")(feats)
    np.testing.assert_allclose(out["short"], cfg.codec.disk_radius * raw.numpy(), rtol=1e-5, atol=1e-5)
    raw = model.get_layer("long_head")(feats)
    np.testing.assert_allclose(out["long"], cfg.codec.disk_radius * raw.numpy(), rtol=1e-5, atol=1e-5)


def test_weights_shared_across_output_strides():
    """Same weights at strides 8 and 32: the 1x1 heads agree at the shared cells."""
    m8, m32 = build_model(_cfg(), output_stride=8), build_model(_cfg(), output_stride=32)
    m32.set_weights(m8.get_weights())
    x = _images(1, 129, 97)
    a, b = m8(x, training=False), m32(x, training=False)
    np.testing.assert_allclose(a["heatmap_logits"][:, ::4, ::4], b["heatmap_logits"], atol=1e-4)
    np.testing.assert_allclose(a["body_logits"][:, ::4, ::4], b["body_logits"], atol=1e-4)


def test_bad_sizes_and_strides_raise():
    with pytest.raises(ValueError, match="output_stride"):
        build_model(_cfg(), output_stride=12)
    model = build_model(_cfg())
    with pytest.raises(ValueError, match="s\\*n \\+ 1"):
        model(_images(1, 64, 65))
    fn = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="s\\*n \\+ 1"):
        fn(_images(1, 65, 70))


def _same_outputs(a, b, x):
    oa, ob = a(x, training=False), b(x, training=False)
    assert set(oa) == set(ob)
    for k in oa:
        np.testing.assert_array_equal(oa[k].numpy(), ob[k].numpy(), err_msg=k)


def _perturb(model):
    """Non-trivial weights and BN statistics, so save/load is tested on real numbers."""
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])


def test_keras_save_and_load_identical(tmp_path):
    model = build_model(_cfg("model.head_channels=4"))
    _perturb(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    _same_outputs(model, loaded, _images(1, 65, 81))


def test_weights_h5_save_and_load_identical(tmp_path):
    cfg = _cfg()
    model = build_model(cfg)
    _perturb(model)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    fresh = build_model(cfg)
    fresh.load_weights(path)
    _same_outputs(model, fresh, _images())


def test_get_config_round_trip():
    model = build_model(_cfg())
    _perturb(model)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    _same_outputs(model, clone, _images())
    layer = clone.get_layer("offset_refinement")
    assert layer.mid_refine_steps == 2 and layer.output_stride == 8
    assert layer.offset_scale == 16.0 and len(layer.directed_edges) == 32


def _random_targets(out, rng):
    t = {}
    for key in ("heatmap", "short", "mid", "long", "body"):
        pred = out[key if key in ("short", "mid", "long") else f"{key}_logits"]
        c = pred.shape[-1]
        t[key] = (rng.random(pred.shape) < 0.3).astype(np.float32) if key in ("heatmap", "body") \
            else rng.normal(0, 20, pred.shape).astype(np.float32)
        wc = c if key in ("heatmap", "body") else c // 2
        t[f"{key}_weight"] = (rng.random(pred.shape[:-1] + (wc,)) < 0.5).astype(np.float32)
    return t


def _train_step(model, cfg, x, targets, optimizer):
    loss = StrongPoseLoss.from_config(cfg)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        total = loss(targets, out, x.shape[0])["total"]
        scaled = optimizer.scale_loss(total) if hasattr(optimizer, "scale_loss") else total
    grads = tape.gradient(scaled, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return out, total, grads


def test_train_step_gradients_finite():
    cfg = _cfg()
    model = build_model(cfg)
    x = _images(2)
    targets = _random_targets(model(x, training=False), np.random.default_rng(0))
    _, total, grads = _train_step(model, cfg, x, targets, keras.optimizers.Adam(1e-3))
    assert np.isfinite(float(total))
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.any(g.numpy() != 0) for g in grads)


def test_freeze_batchnorm_uses_moving_statistics():
    cfg = _cfg("model.freeze_batchnorm=true")
    model = build_model(cfg)
    bns = [l for l in model.get_layer("resnet_v2").layers
           if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and not any(l.trainable for l in bns)
    x = _images(2)
    before = [v.numpy().copy() for l in bns for v in l.non_trainable_weights]
    a, b = model(x, training=True), model(x, training=False)
    np.testing.assert_allclose(a["heatmap_logits"], b["heatmap_logits"], atol=1e-5)
    targets = _random_targets(b, np.random.default_rng(0))
    _train_step(model, cfg, x, targets, keras.optimizers.SGD(0.1))
    after = [v.numpy() for l in bns for v in l.non_trainable_weights]
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)
    # Unfrozen: training mode uses batch statistics, so the outputs differ.
    live = build_model(_cfg())
    diff = live(x, training=True)["heatmap_logits"] - live(x, training=False)["heatmap_logits"]
    assert float(tf.reduce_max(tf.abs(diff))) > 1e-3
    assert freeze_batchnorm(live) == len(bns)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_builds_runs_and_trains(mixed_precision):
    cfg = _cfg()
    model = build_model(cfg)
    assert model.get_layer("heatmap_logits_head").compute_dtype == "float16"
    x = _images(2)
    out = model(x, training=False)
    assert all(v.dtype == tf.float32 for v in out.values())
    targets = _random_targets(out, np.random.default_rng(0))
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
    before = [v.numpy().copy() for v in model.trainable_variables]
    # The first steps may overflow in float16 at the initial loss scale (2**15): the
    # optimizer then skips them and lowers the scale, so allow a few.
    for _ in range(8):
        out, total, grads = _train_step(model, cfg, x, targets, opt)
        if all(np.all(np.isfinite(g.numpy())) for g in grads):
            break
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert all(v.dtype == tf.float32 for v in out.values())
    assert np.isfinite(float(total))
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    changed = [np.any(b != v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert any(changed)


def test_backbone_weights_loaded_when_configured(monkeypatch):
    calls = []
    fake = types.ModuleType("strongpose.backbone_weights")
    fake.load_backbone_weights = lambda backbone, weights, depth: calls.append(
        (backbone.name, weights, depth))
    monkeypatch.setitem(sys.modules, "strongpose.backbone_weights", fake)
    build_model(_cfg("model.weights=/some/file.weights.h5"))
    assert calls == [("resnet_v2", "/some/file.weights.h5", "tiny")]


def test_refinement_keeps_exact_targets_fixed():
    """On exact target maps (strongpose.targets) refinement changes nothing where defined:
    p + M(p) lands on keypoint b, where the short field S_b(q) = y_b - q interpolates to 0;
    likewise for long-range offsets over a person whose mask covers the image."""
    from strongpose.targets import TargetEncoder

    cfg = _cfg()
    k = cfg.skeleton.num_keypoints
    rng = np.random.default_rng(5)
    kps = np.zeros((1, 2, k, 3), np.float32)
    kps[0, 0, :, :2] = rng.uniform(24, 104, (k, 2))
    kps[0, 0, :, 2] = 2
    kps[0, 0, 3, 2] = 0                       # one unlabelled keypoint
    inputs = {"keypoints": kps, "num_people": np.array([1], np.int32),
              "person_masks": np.ones((1, 2, 129, 129), np.uint8),
              "has_mask": np.array([[True, False]]),
              "crowd_mask": np.zeros((1, 129, 129), np.uint8),
              "unannotated_mask": np.zeros((1, 129, 129), np.uint8)}
    t = TargetEncoder.from_config(cfg)(inputs, map_size=(17, 17))
    assert float(tf.reduce_sum(t["mid_weight"])) > 0 and float(tf.reduce_sum(t["long_weight"])) > 0
    layer = OffsetRefinement(cfg.skeleton.directed_edges, 8, 1.0, mid_refine_steps=2,
                             long_refine_steps=1)
    _, mid, long = layer([t["short"], t["mid"], t["long"]])
    for got, key in ((mid, "mid"), (long, "long")):
        w = np.repeat(t[f"{key}_weight"].numpy(), 2, axis=-1) > 0
        np.testing.assert_allclose(got.numpy()[w], t[key].numpy()[w], atol=1e-3, err_msg=key)
