"""Masked losses: known values on hand-made maps, ignore regions, batch splitting, dtypes."""

import math

import numpy as np
import pytest
import tensorflow as tf

from strongpose.config import Config, load_config
from strongpose.losses import StrongPoseLoss, offset_l1_per_image, sigmoid_ce_per_image
from strongpose.skeleton import Skeleton

K, E, H, W = 3, 2, 5, 6
R = 4.0


def _targets(rng: np.random.Generator, b: int = 2) -> dict[str, np.ndarray]:
    """Random binary heat/body targets, random offsets and random 0/1 weights."""
    f = lambda *s: rng.normal(0, 10, size=s).astype(np.float32)
    m = lambda *s: (rng.random(s) < 0.5).astype(np.float32)
    return {
        "heatmap": m(b, H, W, K), "heatmap_weight": m(b, H, W, K),
        "short": f(b, H, W, 2 * K), "short_weight": m(b, H, W, K),
        "mid": f(b, H, W, 4 * E), "mid_weight": m(b, H, W, 2 * E),
        "long": f(b, H, W, 2 * K), "long_weight": m(b, H, W, K),
        "body": m(b, H, W, 1), "body_weight": m(b, H, W, 1),
    }


def _perfect(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs that match the targets exactly (logits +-50 give CE ~ 2e-22)."""
    logit = lambda y: (2 * y - 1) * 50.0
    return {"heatmap_logits": logit(t["heatmap"]), "body_logits": logit(t["body"]),
            "short": t["short"].copy(), "mid": t["mid"].copy(), "long": t["long"].copy(),
            "inter_heatmap_logits": logit(t["heatmap"]), "inter_short": t["short"].copy()}


def _loss(**kw) -> StrongPoseLoss:
    return StrongPoseLoss(disk_radius=R, **kw)


def test_perfect_prediction_gives_zero(rng):
    t = _targets(rng)
    out = _loss()(t, _perfect(t), global_batch_size=2)
    assert set(out) == {"heatmap", "body", "short", "mid", "long", "inter_heatmap",
                        "inter_short", "total"}
    for k, v in out.items():
        assert v.dtype == tf.float32 and v.shape == ()
        assert float(v) == pytest.approx(0.0, abs=1e-6), k


def test_known_values_and_weighting(rng):
    t = _targets(rng, b=1)
    o = _perfect(t)
    # Heat map: logits 0 everywhere -> log(2) per weighted cell, weighted mean = log 2.
    o["heatmap_logits"] = np.zeros_like(o["heatmap_logits"])
    # Short: error (3, 4) at exactly one weighted pair -> (3 + 4) / R over n weighted pairs.
    n_short = t["short_weight"].sum()
    i, j, c = np.argwhere(t["short_weight"][0] > 0)[0]
    o["short"][0, i, j, 2 * c] += 3.0
    o["short"][0, i, j, 2 * c + 1] -= 4.0
    # Long: every pair off by (1, 1) -> 2 / R on average.
    o["long"] = o["long"] + 1.0
    out = _loss(heatmap=4.0, short=1.0, long=0.5, intermediate=0.5)(t, o, global_batch_size=1)
    assert float(out["heatmap"]) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(out["short"]) == pytest.approx(7.0 / R / n_short, rel=1e-5)
    assert float(out["long"]) == pytest.approx(2.0 / R, rel=1e-5)
    assert float(out["body"]) == pytest.approx(0.0, abs=1e-6)
    # The intermediate short head still matches the target exactly.
    assert float(out["inter_short"]) == pytest.approx(0.0, abs=1e-6)
    expected = 4.0 * math.log(2.0) + 1.0 * 7.0 / R / n_short + 0.5 * 2.0 / R
    assert float(out["total"]) == pytest.approx(expected, rel=1e-5)


def test_intermediate_terms_scaled_by_intermediate_factor(rng):
    t = _targets(rng, b=1)
    o = _perfect(t)
    o["inter_heatmap_logits"] = np.zeros_like(o["inter_heatmap_logits"])
    out = _loss(heatmap=4.0, intermediate=0.25)(t, o, global_batch_size=1)
    assert float(out["inter_heatmap"]) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(out["total"]) == pytest.approx(0.25 * 4.0 * math.log(2.0), rel=1e-5)


def test_ignored_cells_do_not_count(rng):
    t = _targets(rng)
    o = _perfect(t)
    for key, wkey in (("short", "short_weight"), ("mid", "mid_weight"), ("long", "long_weight")):
        ignored = np.repeat(t[wkey] == 0, 2, axis=-1)
        o[key] = np.where(ignored, 1e4, o[key])
    for key, wkey in (("heatmap_logits", "heatmap_weight"), ("body_logits", "body_weight")):
        o[key] = np.where(t[wkey] == 0, -o[key], o[key])  # wrong with confidence where ignored
    out = _loss()(t, o, global_batch_size=2)
    assert float(out["total"]) == pytest.approx(0.0, abs=1e-5)


def test_image_without_weights_adds_zero(rng):
    t = _targets(rng, b=1)
    t["mid_weight"][:] = 0
    o = _perfect(t)
    o["mid"] = o["mid"] + 100.0
    assert float(_loss()(t, o, 1)["mid"]) == 0.0


def test_split_batch_halves_sum_to_whole(rng):
    t = _targets(rng, b=4)
    o = {k: v + rng.normal(0, 1, v.shape).astype(np.float32) for k, v in _perfect(t).items()}
    loss = _loss()
    whole = loss(t, o, global_batch_size=4)
    halves = [loss({k: v[s] for k, v in t.items()}, {k: v[s] for k, v in o.items()}, 4)
              for s in (slice(0, 2), slice(2, 4))]
    for k in whole:
        assert float(halves[0][k] + halves[1][k]) == pytest.approx(float(whole[k]), rel=1e-5), k


def test_runs_in_a_distribution_strategy_replica_context(rng):
    """Smoke test: one replica here (the sum over shards is tested above)."""
    t = _targets(rng, b=4)
    o = {k: v + rng.normal(0, 1, v.shape).astype(np.float32) for k, v in _perfect(t).items()}
    loss = _loss()
    whole = float(loss(t, o, 4)["total"])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        per_replica = strategy.run(lambda tt, oo: loss(tt, oo, 4)["total"], args=(t, o))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    assert float(total) == pytest.approx(whole, rel=1e-6)


def test_float16_predictions_give_float32_losses(rng):
    t = _targets(rng)
    o = {k: tf.cast(v, tf.float16) for k, v in _perfect(t).items()}
    out = _loss()(t, o, 2)
    assert all(v.dtype == tf.float32 for v in out.values())
    assert float(out["total"]) == pytest.approx(0.0, abs=1e-2)


def test_gradients_finite(rng):
    t = _targets(rng)
    o = {k: tf.Variable(v * 0.5) for k, v in _perfect(t).items()}
    with tf.GradientTape() as tape:
        total = _loss()(t, o, 2)["total"]
    grads = tape.gradient(total, list(o.values()))
    for g in grads:
        assert g is not None and np.all(np.isfinite(g.numpy()))


def test_works_in_tf_function_with_unknown_shapes(rng):
    t = _targets(rng)
    o = _perfect(t)
    spec = lambda a: tf.TensorSpec([None, None, None, a.shape[-1]], tf.float32)
    fn = tf.function(lambda tt, oo: _loss()(tt, oo, 2)["total"],
                     input_signature=[{k: spec(v) for k, v in t.items()},
                                      {k: spec(v) for k, v in o.items()}])
    assert float(fn(t, o)) == pytest.approx(0.0, abs=1e-6)


def test_without_intermediate_outputs(rng):
    t = _targets(rng)
    o = _perfect(t)
    del o["inter_heatmap_logits"], o["inter_short"]
    out = _loss()(t, o, 2)
    assert "inter_heatmap" not in out and "inter_short" not in out


def test_from_config_uses_config_weights():
    cfg = load_config("strongpose")
    loss = StrongPoseLoss.from_config(cfg)
    assert loss.disk_radius == cfg.codec.disk_radius == 16.0
    assert loss.weights["mid"] == pytest.approx(0.4) and loss.weights["long"] == pytest.approx(0.1)
    assert loss.weights["inter_heatmap"] == pytest.approx(cfg.loss.intermediate * cfg.loss.heatmap)


def test_custom_skeleton_channel_counts(rng):
    """Nothing assumes 17 keypoints: a 3-keypoint skeleton's maps work."""
    sk = Skeleton(names=("a", "b", "c"), edges=((0, 1), (1, 2)), flip_pairs=(), sigmas=(0.1,) * 3)
    cfg = Config(skeleton=sk)
    assert (sk.num_keypoints, sk.num_edges) == (K, E)
    t = _targets(rng)
    assert float(StrongPoseLoss.from_config(cfg)(t, _perfect(t), 2)["total"]) < 1e-5


def test_bad_inputs_raise_clear_errors(rng):
    t = _targets(rng)
    o = _perfect(t)
    loss = _loss()
    with pytest.raises(KeyError, match="mid"):
        loss({k: v for k, v in t.items() if k != "mid"}, o, 2)
    with pytest.raises(KeyError, match="body_logits"):
        loss(t, {k: v for k, v in o.items() if k != "body_logits"}, 2)
    with pytest.raises(ValueError, match="'short'.*target shape"):
        loss(t, {**o, "short": o["short"][..., :-2]}, 2)
    with pytest.raises(ValueError, match="'mid'.*weight shape"):
        loss({**t, "mid_weight": t["mid_weight"][..., :1]}, o, 2)
    with pytest.raises(ValueError, match="global_batch_size"):
        loss(t, o, 0)
    with pytest.raises(ValueError, match="disk_radius"):
        StrongPoseLoss(disk_radius=0.0)
    with pytest.raises(ValueError, match="even channel"):
        offset_l1_per_image(np.zeros((1, 2, 2, 3), np.float32), np.zeros((1, 2, 2, 3), np.float32),
                            np.zeros((1, 2, 2, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match=r"\(B, h, w, C\)"):
        sigmoid_ce_per_image(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 3), np.float32),
                             np.zeros((2, 2, 3), np.float32))
