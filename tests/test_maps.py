"""The map table (strongpose.maps): keys, channels, flip kinds, channel checks, and that
targets, model, losses, flip and the decode oracle use exactly its vocabulary."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from strongpose import maps
from strongpose.skeleton import Skeleton

COCO = Skeleton()
# Five points, four tree edges (8 directed), one flip pair: not COCO.
SMALL = Skeleton(names=("head", "neck", "hip", "lknee", "rknee"),
                 edges=((0, 1), (1, 2), (2, 3), (2, 4)), flip_pairs=((3, 4),),
                 sigmas=(0.05,) * 5)

# Every key any stage uses, with its flip kind (what flip.MAP_KINDS used to spell out).
FLIP_KINDS = {
    "heatmap": "keypoint", "heatmap_weight": "keypoint", "short_weight": "keypoint",
    "long_weight": "keypoint", "heatmap_logits": "keypoint", "inter_heatmap_logits": "keypoint",
    "short": "keypoint_offset", "long": "keypoint_offset", "inter_short": "keypoint_offset",
    "mid": "edge_offset", "mid_weight": "edge",
    "body": "plain", "body_weight": "plain", "body_logits": "plain",
}


def _all_keys():
    return maps.MAP_KEYS + maps.WEIGHT_KEYS + maps.OUTPUT_KEYS + tuple(
        maps.intermediate_output_key(k) for k in maps.INTERMEDIATE)


def _expected_channels(skeleton):
    """Hand-written channel counts of every key for ``skeleton``."""
    k, e = skeleton.num_keypoints, skeleton.num_edges
    return {"heatmap": k, "short": 2 * k, "mid": 4 * e, "long": 2 * k, "body": 1,
            "heatmap_weight": k, "short_weight": k, "mid_weight": 2 * e, "long_weight": k,
            "body_weight": 1, "heatmap_logits": k, "body_logits": 1,
            "inter_heatmap_logits": k, "inter_short": 2 * k}


def _zeros(skeleton, keys, h=3, w=4):
    want = _expected_channels(skeleton)
    return {key: np.zeros((h, w, want[key]), np.float32) for key in keys}


# --------------------------------------------------------------------------- table
def test_keys_and_order():
    assert maps.MAP_KEYS == ("heatmap", "short", "mid", "long", "body")
    assert tuple(spec.key for spec in maps.MAPS) == maps.MAP_KEYS
    assert list(maps.SPECS) == list(maps.MAP_KEYS)
    assert all(maps.SPECS[spec.key] is spec for spec in maps.MAPS)
    assert maps.WEIGHT_KEYS == ("heatmap_weight", "short_weight", "mid_weight", "long_weight",
                                "body_weight")
    assert maps.OUTPUT_KEYS == ("heatmap_logits", "short", "mid", "long", "body_logits")
    assert maps.INTERMEDIATE == ("heatmap", "short")
    assert [maps.intermediate_output_key(k) for k in maps.INTERMEDIATE] == [
        "inter_heatmap_logits", "inter_short"]
    assert [s.key for s in maps.MAPS if s.logits] == ["heatmap", "body"]
    assert {s.key: s.loss for s in maps.MAPS} == {
        "heatmap": "sigmoid_ce", "short": "offset_l1", "mid": "offset_l1",
        "long": "offset_l1", "body": "sigmoid_ce"}
    assert all(s.holds and "\n" not in s.holds for s in maps.MAPS)
    with pytest.raises(ValueError, match="'mid' has no intermediate head"):
        maps.intermediate_output_key("mid")


@pytest.mark.parametrize("skeleton", [COCO, SMALL], ids=["coco", "small"])
def test_channels_per_skeleton(skeleton):
    want = _expected_channels(skeleton)
    for spec in maps.MAPS:
        assert spec.channels(skeleton) == want[spec.key], spec.key
        assert spec.weight_channels(skeleton) == want[spec.weight_key], spec.key
        assert spec.channels(skeleton) == want[spec.output_key], spec.key


def test_channels_known_numbers():
    assert [s.channels(COCO) for s in maps.MAPS] == [17, 34, 64, 34, 1]
    assert [s.weight_channels(COCO) for s in maps.MAPS] == [17, 17, 32, 17, 1]
    assert [s.channels(SMALL) for s in maps.MAPS] == [5, 10, 16, 10, 1]
    assert [s.weight_channels(SMALL) for s in maps.MAPS] == [5, 5, 8, 5, 1]


def test_spec_rejects_unknown_kind_and_loss():
    with pytest.raises(ValueError, match="kind 'disk'"):
        maps.MapSpec("x", "disk", logits=False, loss="offset_l1", holds="-")
    with pytest.raises(ValueError, match="loss 'l2'"):
        maps.MapSpec("x", "plain", logits=False, loss="l2", holds="-")


def test_flip_kind_of_every_key():
    assert set(_all_keys()) == set(FLIP_KINDS)
    for key in _all_keys():
        assert maps.flip_kind(key) == FLIP_KINDS[key], key


def test_flip_kind_unknown_key_lists_known_ones():
    with pytest.raises(ValueError, match="unknown map key 'heat'") as err:
        maps.flip_kind("heat")
    for key in FLIP_KINDS:
        assert repr(key) in str(err.value)
    with pytest.raises(ValueError, match="unknown map key 'inter_mid'"):
        maps.flip_kind("inter_mid")


def test_imports_no_tensorflow_or_keras():
    code = ("import sys, strongpose.maps; "
            "bad = [m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ check_channels
@pytest.mark.parametrize("skeleton", [COCO, SMALL], ids=["coco", "small"])
def test_check_channels_accepts_every_key(skeleton):
    keys = _all_keys()
    maps.check_channels(_zeros(skeleton, keys), keys, skeleton, "test")
    batched = {k: v[None] for k, v in _zeros(skeleton, keys).items()}
    maps.check_channels(batched, keys, skeleton, "test")


def test_check_channels_errors():
    good = _zeros(COCO, maps.MAP_KEYS)
    with pytest.raises(ValueError, match=r"^decode: 'mid' has 32 channels, expected 64 "
                                         r"\(K=17, E=16\)"):
        maps.check_channels({**good, "mid": np.zeros((3, 4, 32))}, maps.MAP_KEYS, COCO, "decode")
    with pytest.raises(ValueError, match="'mid_weight' has 64 channels, expected 32"):
        maps.check_channels({"mid_weight": np.zeros((3, 4, 64))}, ["mid_weight"], COCO, "t")
    with pytest.raises(ValueError, match="'body_logits' has 2 channels, expected 1"):
        maps.check_channels({"body_logits": np.zeros((1, 3, 4, 2))}, ["body_logits"], COCO, "t")
    with pytest.raises(ValueError, match=r"^decode: maps lack \['long', 'body'\]"):
        maps.check_channels(_zeros(COCO, ("heatmap", "short", "mid")), maps.MAP_KEYS, COCO,
                            "decode")
    with pytest.raises(ValueError, match="unknown map key 'heat'"):
        maps.check_channels({"heat": np.zeros((3, 4, 17))}, ["heat"], COCO, "t")
    with pytest.raises(ValueError, match="'body' has no channel axis"):
        maps.check_channels({"body": np.float32(0)}, ["body"], COCO, "t")
    # Only the keys asked for are checked; other entries may be anything.
    maps.check_channels({**good, "extra": object()}, ["heatmap"], COCO, "t")
    # Array-likes without .shape, and unknown last axes, are fine.
    maps.check_channels({"body": [[[0.0]]]}, ["body"], COCO, "t")

    class Traced:
        shape = (None, None, None, None)
    maps.check_channels({"short": Traced()}, ["short"], COCO, "t")


# ------------------------------------------------- the stages use the table's keys
def test_module_aliases_are_the_table():
    from strongpose import losses, model, targets
    assert targets.MAP_KEYS == maps.MAP_KEYS and targets.WEIGHT_KEYS == maps.WEIGHT_KEYS
    assert model.OUTPUT_KEYS == maps.OUTPUT_KEYS
    assert model.INTERMEDIATE_KEYS == ("inter_heatmap_logits", "inter_short")
    assert losses.LOSS_TERMS == ("heatmap", "body", "short", "mid", "long")
    assert set(losses.LOSS_TERMS) == set(maps.MAP_KEYS)
    assert losses.INTERMEDIATE_TERMS == ("inter_heatmap", "inter_short")
    assert set(losses._TARGET_KEYS) == set(maps.MAP_KEYS + maps.WEIGHT_KEYS)
    assert losses._OUTPUT_KEYS == maps.OUTPUT_KEYS


def test_decode_oracle_reads_the_table():
    text = (__import__("pathlib").Path(__file__).resolve().parents[1]
            / "benchmarks" / "decode_oracle.py").read_text()
    assert "from strongpose.maps import MAP_KEYS" in text
    assert "MAP_KEYS = (" not in text


def test_targets_keys_and_channels_are_the_table():
    from strongpose.targets import build_targets
    h = w = 5
    kp = np.zeros((2, 5, 3), np.float32)
    kp[0, :, :2], kp[0, :, 2] = [[4, 4], [4, 8], [8, 8], [6, 12], [10, 12]], 2
    inputs = {"keypoints": kp, "num_people": np.int32(1),
              "person_masks": np.zeros((2, h, w), np.uint8), "has_mask": np.zeros(2, bool),
              "crowd_mask": np.zeros((h, w), np.uint8),
              "unannotated_mask": np.zeros((h, w), np.uint8)}
    out = build_targets(inputs, skeleton=SMALL, stride=4, map_size=(h, w), disk_radius=4.0,
                        limb_radius=2.0)
    assert list(out) == list(maps.MAP_KEYS + maps.WEIGHT_KEYS)
    maps.check_channels(out, maps.MAP_KEYS + maps.WEIGHT_KEYS, SMALL, "targets")


@pytest.fixture(scope="module")
def tiny_outputs():
    from strongpose.config import Config, load_config
    from strongpose.model import build_model
    base = load_config("tiny", [])
    cfg = Config(skeleton=SMALL, model=base.model, codec=base.codec)
    model = build_model(cfg)
    x = np.random.default_rng(0).uniform(0, 255, (1, 65, 65, 3)).astype(np.float32)
    return cfg, model, model(x, training=False)


def test_model_outputs_and_heads_are_the_table(tiny_outputs):
    cfg, model, out = tiny_outputs
    inter = tuple(maps.intermediate_output_key(k) for k in maps.INTERMEDIATE)
    assert set(out) == set(maps.OUTPUT_KEYS + inter)
    maps.check_channels(out, maps.OUTPUT_KEYS + inter, SMALL, "model")
    # Saved models load by layer name: heads "<output key>_head", outputs by their key.
    for spec in maps.MAPS:
        assert model.get_layer(f"{spec.output_key}_head").kernel.shape[-1] == spec.channels(SMALL)
        assert model.get_layer(spec.output_key).scale == 1.0
    assert model.get_layer("inter_heatmap_logits_head") is not None
    assert model.get_layer("inter_heatmap_logits").scale == 1.0
    assert model.get_layer("inter_short").scale == cfg.codec.disk_radius


def test_loss_terms_and_keys_are_the_table(tiny_outputs, rng):
    from strongpose.losses import StrongPoseLoss
    _, _, out = tiny_outputs
    shape = out["heatmap_logits"].shape[:3]
    targets = {key: (rng.random(tuple(shape) + (c,)) < 0.5).astype(np.float32)
               for key, c in _expected_channels(SMALL).items()
               if key in maps.MAP_KEYS + maps.WEIGHT_KEYS}
    loss = StrongPoseLoss(disk_radius=4.0)
    per_image = loss.per_image(targets, out)
    assert list(per_image) == ["heatmap", "body", "short", "mid", "long",
                               "inter_heatmap", "inter_short"]
    assert set(loss(targets, out, 1)) == set(per_image) | {"total"}
    for key in maps.OUTPUT_KEYS:
        with pytest.raises(KeyError, match=key):
            loss.per_image(targets, {k: v for k, v in out.items() if k != key})
    for key in maps.MAP_KEYS + maps.WEIGHT_KEYS:
        with pytest.raises(KeyError, match=key):
            loss.per_image({k: v for k, v in targets.items() if k != key}, out)


def test_flip_maps_accepts_every_key_of_the_table():
    from strongpose.flip import flip_maps
    keys = _all_keys()
    flipped = flip_maps(_zeros(SMALL, keys), SMALL)
    assert set(flipped) == set(keys)
    with pytest.raises(ValueError, match="flip_maps: unknown map key 'heat'"):
        flip_maps({"heat": np.zeros((3, 3, 5))}, SMALL)


# ----------------------------------------------- model input size error (model.py fix)
@pytest.mark.parametrize("size,stride,hint", [(64, 8, "nearest: 57 or 65"),
                                               (100, 16, "nearest: 97 or 113"),
                                               (5, 8, "nearest: 9)"), (8, 8, "nearest: 9)")])
def test_input_size_error_suggests_nearest_sizes(size, stride, hint):
    from strongpose.model import Preprocess
    with pytest.raises(ValueError, match=r"s\*n \+ 1") as err:
        Preprocess(stride)(np.zeros((1, size, 2 * stride + 1, 3), np.float32))
    assert hint in str(err.value)
