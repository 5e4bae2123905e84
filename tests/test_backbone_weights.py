"""Backbone weights: Keras files by layer name, TF-slim checkpoints, mismatch errors, converter."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from strongpose.backbone_weights import (WeightsMismatchError, backbone_variables, depth_for_units,
                                         detect_depth, find_slim_scope, keras3_h5_names,
                                         keras_to_slim_name, load_backbone_weights, slim_scope,
                                         stacks_of, units_per_stack)
from strongpose.backbones import SPECS, BackboneSpec
from strongpose.convert_checkpoint import main as convert_main
from strongpose.convert_checkpoint import parse_depth
from strongpose.resnet_v2 import build_backbone


def randomise(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape = tuple(w.shape)
            if w.name == "kernel":
                v = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
            elif w.name in ("gamma", "moving_variance"):
                v = rng.uniform(0.5, 1.5, shape)
            else:
                v = rng.normal(0, 0.1, shape)
            w.assign(v.astype(np.float32))


def values_of(model: keras.Model) -> dict:
    return {k: np.asarray(v) for k, v in backbone_variables(model).items()}


def write_slim_checkpoint(prefix: str, tensors: dict) -> None:
    """A TF checkpoint holding exactly these names (slim's, not tf.train.Checkpoint's)."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


def slim_tensors(depth: str, seed: int = 0) -> dict:
    """Distinct random values under every slim name of ``depth``, plus the classifier and step."""
    rng = np.random.default_rng(seed)
    scope = slim_scope(depth)
    out = {keras_to_slim_name(k, scope): rng.normal(0, 1, v.shape).astype(np.float32)
           for k, v in backbone_variables(build_backbone(depth, 32)).items()}
    out[f"{scope}/logits/weights"] = rng.normal(0, 1, (1, 1, 256, 10)).astype(np.float32)
    out[f"{scope}/logits/biases"] = np.zeros(10, np.float32)
    out["global_step"] = np.int64(1000)
    return out


# ------------------------------------------------------------------ names
def test_keras_to_slim_names_known_answers():
    s = "resnet_v2_101"
    assert keras_to_slim_name("conv1_conv/kernel", s) == "resnet_v2_101/conv1/weights"
    assert keras_to_slim_name("conv1_conv/bias", s) == "resnet_v2_101/conv1/biases"
    assert keras_to_slim_name("conv2_block1_preact_bn/moving_variance", s) == \
        "resnet_v2_101/block1/unit_1/bottleneck_v2/preact/moving_variance"
    assert keras_to_slim_name("conv2_block1_0_conv/bias", s) == "resnet_v2_101/block1/unit_1/bottleneck_v2/shortcut/biases"
    assert keras_to_slim_name("conv4_block23_1_conv/kernel", s) == "resnet_v2_101/block3/unit_23/bottleneck_v2/conv1/weights"
    assert keras_to_slim_name("conv3_block2_1_bn/gamma", s) == "resnet_v2_101/block2/unit_2/bottleneck_v2/conv1/BatchNorm/gamma"
    assert keras_to_slim_name("conv5_block3_2_bn/beta", s) == "resnet_v2_101/block4/unit_3/bottleneck_v2/conv2/BatchNorm/beta"
    assert keras_to_slim_name("conv5_block3_3_conv/bias", s) == "resnet_v2_101/block4/unit_3/bottleneck_v2/conv3/biases"
    assert keras_to_slim_name("post_bn/moving_mean", s) == "resnet_v2_101/postnorm/moving_mean"
    assert slim_scope("resnet152") == "resnet_v2_152" and slim_scope("tiny") == "resnet_v2_tiny"
    for bad in ("conv1_conv/gamma", "post_bn/kernel", "conv2_block1_1_bn/kernel", "head/kernel", "kernel"):
        with pytest.raises(ValueError, match="ResNet v2"):
            keras_to_slim_name(bad, s)


def test_slim_names_cover_every_variable_once():
    keys = list(backbone_variables(build_backbone("resnet50", 32)))
    slim = {keras_to_slim_name(k, "resnet_v2_50") for k in keys}
    assert len(slim) == len(keys) == 270
    assert find_slim_scope(slim | {"global_step"}) == "resnet_v2_50"


def test_keras3_h5_names_are_what_keras_writes(tmp_path):
    import h5py
    net = build_backbone("tiny", 8)   # OS 8: extra shortcut/no pool layers, same weighted order
    path = str(tmp_path / "t.weights.h5")
    net.save_weights(path)
    names = keras3_h5_names(net)
    with h5py.File(path) as f:
        for group, layer in names.items():
            stored = len(f["layers"][group]["vars"]) if group in f["layers"] else 0
            assert stored == len(net.get_layer(layer).weights), (group, layer)


# ------------------------------------------------------------- keras files
@pytest.fixture(scope="module")
def keras_resnet50_file(tmp_path_factory):
    ref = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(None, None, 3))
    randomise(ref, seed=7)
    path = str(tmp_path_factory.mktemp("w") / "resnet50v2.weights.h5")
    ref.save_weights(path)
    return ref, path


def test_keras_resnet50v2_file_loads_by_name_and_gives_identical_outputs(keras_resnet50_file):
    ref, path = keras_resnet50_file
    ref_vals = values_of(ref)
    for stride in (8, 32):
        ours = build_backbone("resnet50", stride)
        assert load_backbone_weights(ours, path, "resnet50") == 270
        our_vals = values_of(ours)
        assert ref_vals.keys() == our_vals.keys()
        for k in ref_vals:
            np.testing.assert_array_equal(our_vals[k], ref_vals[k], err_msg=k)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 65, 97, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ours(x)["features"]), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)


def test_keras_legacy_h5_loads_by_name(tmp_path):
    src = build_backbone("tiny", 32, name="src")
    randomise(src, seed=8)
    path = str(tmp_path / "tiny_legacy.h5")
    keras.saving.save_model(src, path)   # Keras 2 HDF5 layout: layers addressed by name
    dst = build_backbone("tiny", 16)
    load_backbone_weights(dst, path, "tiny")
    got = values_of(dst)
    for k, v in values_of(src).items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_own_backbone_file_round_trips_across_output_strides(tmp_path):
    src = build_backbone("tiny", 32)
    randomise(src, seed=9)
    path = str(tmp_path / "tiny.weights.h5")
    src.save_weights(path)
    dst = build_backbone("tiny", 8)
    load_backbone_weights(dst, path, "tiny")
    got = values_of(dst)
    for k, v in values_of(src).items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_wrong_depth_file_is_refused_and_nothing_loaded(keras_resnet50_file):
    _, path = keras_resnet50_file
    tiny = build_backbone("tiny", 32)
    before = values_of(tiny)
    with pytest.raises(WeightsMismatchError) as err:
        load_backbone_weights(tiny, path, "tiny")
    e = err.value
    assert "conv1_conv/kernel: (7, 7, 3, 64) != (7, 7, 3, 16)" in e.wrong_shape
    assert str(e).startswith(f"weights from {path} are for resnet50, the backbone is tiny")
    assert "wrong shape" in str(e) and "more" in str(e)                # long lists are cut short
    assert len(str(e)) < 1200 and len(str(e).splitlines()) == 4
    assert "layers/conv2d_52/vars/0" in e.unexpected                   # resnet50 has more layers
    for k, v in values_of(tiny).items():
        np.testing.assert_array_equal(v, before[k])


# ------------------------------------------------------------ other depths
@pytest.fixture
def narrow_specs(monkeypatch):
    """ResNet-50/101/152 with their units per stack but tiny's widths: cheap to build."""
    tiny = SPECS["tiny"]
    for name in ("resnet50", "resnet101", "resnet152"):
        units = SPECS[name].units
        monkeypatch.setitem(SPECS, name, BackboneSpec(tiny.root_filters, tuple(
            (width, n) for (width, _), n in zip(tiny.stacks, units))))


def test_units_per_stack_name_the_depth():
    assert depth_for_units((3, 4, 23, 3)) == "resnet101" and depth_for_units((3, 4, 6, 3)) == "resnet50"
    assert depth_for_units((1, 2)) is None
    # "tiny" and "small" share their units: the widths tell them apart, units alone do not.
    assert depth_for_units((2, 2, 2, 2)) is None
    assert depth_for_units((2, 2, 2, 2), widths=(8, 16, 32, 64)) == "tiny"
    assert depth_for_units((2, 2, 2, 2), widths=(16, 32, 64, 128)) == "small"
    assert depth_for_units((2, 2, 2, 2), widths=(8, 16, 32, 128)) is None
    shapes = [v.shape for v in build_backbone("tiny", 8).weights]
    assert units_per_stack(shapes) == (2, 2, 2, 2)
    assert stacks_of(shapes) == SPECS["tiny"].stacks
    assert units_per_stack([(7, 7, 3, 64), (1, 1, 64, 64), (3, 3, 64, 64), (3, 3, 128, 128)]) == (1, 1)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_each_backbone_file_is_detected_as_its_own(name, tmp_path):
    """Every backbone's weights file is named after that backbone (not another with the same
    units per stack), and small weights loaded into tiny say so first."""
    path = str(tmp_path / f"{name}.weights.h5")
    build_backbone(name, 16).save_weights(path)
    assert detect_depth(path) == name
    other = "tiny" if name == "small" else "small"
    with pytest.raises(WeightsMismatchError, match=rf"^weights from .* are for {name}, "
                                                   rf"the backbone is {other}"):
        load_backbone_weights(build_backbone(other, 16), path, other)


def test_weights_for_another_depth_say_so_first(narrow_specs, tmp_path):
    src = build_backbone("resnet50", 32)
    randomise(src, seed=11)
    path = str(tmp_path / "r50.weights.h5")
    src.save_weights(path)
    assert detect_depth(path) == "resnet50"
    net = build_backbone("resnet101", 16)
    before = values_of(net)
    with pytest.raises(WeightsMismatchError) as err:
        load_backbone_weights(net, path, "resnet101")
    e = err.value
    msg = str(e)
    assert msg.startswith(f"weights from {path} are for resnet50, the backbone is resnet101")
    assert (e.source_depth, e.depth) == ("resnet50", "resnet101")
    assert len(e.missing) > 200 and f"... and {len(e.missing) - 5} more" in msg   # the list, cut short
    assert len(msg) < 1200 and max(len(line) for line in msg.splitlines()) < 400
    for k, v in values_of(net).items():                                        # nothing loaded
        np.testing.assert_array_equal(v, before[k])


def test_checkpoint_for_another_depth_says_so_first(narrow_specs, tmp_path):
    prefix = str(tmp_path / "resnet_v2_152.ckpt")
    write_slim_checkpoint(prefix, slim_tensors("resnet152", seed=4))
    assert detect_depth(prefix) == "resnet152"
    with pytest.raises(WeightsMismatchError,
                       match=r"^weights from .*resnet_v2_152.ckpt are for resnet152, the backbone is resnet101"):
        load_backbone_weights(build_backbone("resnet101", 32), prefix, "resnet101")
    assert detect_depth(str(tmp_path / "missing.ckpt")) is None


# -------------------------------------------------------------- slim
def test_slim_checkpoint_lands_every_weight_where_it_should(tmp_path):
    tensors = slim_tensors("tiny", seed=1)
    prefix = str(tmp_path / "resnet_v2_tiny.ckpt")
    write_slim_checkpoint(prefix, tensors)
    net = build_backbone("tiny", 8)
    n = load_backbone_weights(net, prefix, "tiny")
    assert n == len(tensors) - 3   # logits weights, biases and global_step skipped
    for k, v in values_of(net).items():
        np.testing.assert_array_equal(v, tensors[keras_to_slim_name(k, "resnet_v2_tiny")], err_msg=k)
    # spot checks of the mapping itself, by value
    np.testing.assert_array_equal(np.asarray(net.get_layer("conv1_conv").bias), tensors["resnet_v2_tiny/conv1/biases"])
    np.testing.assert_array_equal(np.asarray(net.get_layer("conv3_block2_2_bn").moving_mean),
                                  tensors["resnet_v2_tiny/block2/unit_2/bottleneck_v2/conv2/BatchNorm/moving_mean"])


def test_slim_mismatch_lists_offenders_and_loads_nothing(tmp_path):
    tensors = slim_tensors("tiny", seed=2)
    del tensors["resnet_v2_tiny/block3/unit_2/bottleneck_v2/conv2/weights"]
    tensors["resnet_v2_tiny/block3/unit_2/bottleneck_v2/conv2/BatchNorm/gamma"] = np.ones(5, np.float32)
    tensors["resnet_v2_tiny/block9/unit_1/bottleneck_v2/conv1/weights"] = np.ones((1, 1, 2, 2), np.float32)
    prefix = str(tmp_path / "bad.ckpt")
    write_slim_checkpoint(prefix, tensors)
    net = build_backbone("tiny", 32)
    before = values_of(net)
    with pytest.raises(WeightsMismatchError) as err:
        load_backbone_weights(net, prefix, "tiny")
    e = err.value
    assert e.missing == ["conv4_block2_2_conv/kernel (resnet_v2_tiny/block3/unit_2/bottleneck_v2/conv2/weights)"]
    assert e.unexpected == ["resnet_v2_tiny/block9/unit_1/bottleneck_v2/conv1/weights"]
    assert len(e.wrong_shape) == 1 and e.wrong_shape[0].startswith("conv4_block2_2_bn/gamma")
    assert "(5,) != (32,)" in str(e) and "block9/unit_1" in str(e)
    assert str(e).startswith(f"weights from {prefix} do not match the backbone (1 missing")  # same depth
    for k, v in values_of(net).items():
        np.testing.assert_array_equal(v, before[k])


def test_bad_sources_give_clear_errors(tmp_path):
    net = build_backbone("tiny", 32)
    with pytest.raises(FileNotFoundError, match="no_such.ckpt"):
        load_backbone_weights(net, str(tmp_path / "no_such.ckpt"), "tiny")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        load_backbone_weights(net, "imagenet", "tiny")
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone_weights(net, "imagenet", "resnet18")
    with pytest.raises(ValueError, match="is not a resnet50 ResNet v2: it has 8 bottleneck units, resnet50 has 16"):
        load_backbone_weights(net, "imagenet", "resnet50")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_backbone_weights(net, str(junk), "tiny")


# ------------------------------------------------------------- converter
def test_converter_round_trip(tmp_path):
    tensors = slim_tensors("tiny", seed=3)
    prefix = str(tmp_path / "model" / "resnet_v2_tiny.ckpt")
    write_slim_checkpoint(prefix, tensors)
    out = str(tmp_path / "out" / "tiny_slim.weights.h5")
    assert convert_main([prefix, out, "--depth", "tiny", "--quiet"]) == 0
    net = build_backbone("tiny", 16)
    load_backbone_weights(net, out, "tiny")
    for k, v in values_of(net).items():
        np.testing.assert_array_equal(v, tensors[keras_to_slim_name(k, "resnet_v2_tiny")], err_msg=k)


def test_converter_errors(tmp_path, capsys):
    """Bad input: one line on stderr and status 2 (tests/test_cli.py runs the real command)."""
    assert convert_main([str(tmp_path / "missing.ckpt"), str(tmp_path / "o.weights.h5"), "--depth", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m strongpose.convert_checkpoint: error: ") and "missing.ckpt" in err
    assert convert_main([str(tmp_path / "missing.ckpt"), str(tmp_path / "o.h5"), "--depth", "tiny"]) == 2
    assert ".weights.h5" in capsys.readouterr().err
    prefix = str(tmp_path / "resnet_v2_tiny.ckpt")
    write_slim_checkpoint(prefix, slim_tensors("tiny", seed=5))
    assert convert_main([prefix, str(tmp_path / "o.weights.h5"), "--depth", "50", "--quiet"]) == 2
    assert "are for tiny, the backbone is resnet50" in capsys.readouterr().err.splitlines()[0]
    assert parse_depth("101") == "resnet101" and parse_depth("tiny") == "tiny"
    with pytest.raises(SystemExit):
        convert_main(["a.ckpt", "b.weights.h5", "--depth", "34"])


def test_imagenet_source_copies_keras_application_by_name(keras_resnet50_file, monkeypatch):
    """No internet here: stand in for Keras' download with the randomised ResNet50V2."""
    ref, _ = keras_resnet50_file
    calls = []

    def fake_app(**kwargs):
        calls.append(kwargs)
        return ref

    monkeypatch.setattr(keras.applications, "ResNet50V2", fake_app)
    ours = build_backbone("resnet50", 16)
    load_backbone_weights(ours, "imagenet", "resnet50")
    assert calls and calls[0]["weights"] == "imagenet" and calls[0]["include_top"] is False
    got = values_of(ours)
    for k, v in values_of(ref).items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
