"""ResNet v2 backbone: shapes, align-corners geometry, atrous == strided, Keras layout."""

import keras
import numpy as np
import pytest

from strongpose import config
from strongpose.backbones import BACKBONES
from strongpose.resnet_v2 import (SPECS, backbone_spec, build_backbone, mid_layer_name,
                                  preprocess, unit_schedule)


def randomise(model: keras.Model, seed: int = 0, symmetric: bool = False) -> None:
    """Random weights of a sane scale, random BN statistics; optionally flip-symmetric kernels."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape = tuple(w.shape)
            if w.name == "kernel":
                v = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
                if symmetric:
                    v = (v + v[::-1] + v[:, ::-1] + v[::-1, ::-1]) / 4
            elif w.name in ("gamma", "moving_variance"):
                v = rng.uniform(0.5, 1.5, shape)
            else:  # bias, beta, moving_mean
                v = rng.normal(0, 0.1, shape)
            w.assign(v.astype(np.float32))


def run(model: keras.Model, x: np.ndarray) -> dict:
    return {k: np.asarray(v) for k, v in model(x, training=False).items()}


@pytest.fixture(scope="module")
def tiny_nets():
    """Tiny backbones at output stride 8, 16, 32 sharing one set of random weights."""
    nets = {s: build_backbone("tiny", s) for s in (8, 16, 32)}
    randomise(nets[8], seed=1)
    for s in (16, 32):
        nets[s].set_weights(nets[8].get_weights())
    return nets


@pytest.mark.parametrize("stride,height,width", [(8, 65, 129), (16, 97, 65), (32, 129, 97), (16, 129, 129)])
def test_output_shapes_follow_align_corners(tiny_nets, stride, height, width):
    out = tiny_nets[stride](np.zeros((2, height, width, 3), np.float32))
    cells = ((height - 1) // stride + 1, (width - 1) // stride + 1)
    assert tuple(out["features"].shape) == (2, *cells, 4 * SPECS["tiny"].stacks[-1][0])
    assert tuple(out["mid_features"].shape) == (2, *cells, 4 * SPECS["tiny"].stacks[2][0])


def test_97_at_stride_16_gives_7_cells(tiny_nets):
    assert tuple(tiny_nets[16](np.zeros((1, 97, 97, 3), np.float32))["features"].shape[1:3]) == (7, 7)


def test_atrous_equals_strided_at_shared_cells(tiny_nets):
    """With symmetric padding and s*n + 1 inputs, dilation is exact: a rate-r 3x3 conv at
    full resolution, read at every r-th cell, is the 3x3 conv of the sub-sampled input (the
    zero padding lands on the same taps), and every other op is per-cell. So the OS-8
    features sub-sampled [::4, ::4] ARE the OS-32 features (and mid_features likewise)."""
    x = np.random.default_rng(2).uniform(-1, 1, (1, 65, 97, 3)).astype(np.float32)
    out = {s: run(net, x) for s, net in tiny_nets.items()}
    for key in ("features", "mid_features"):
        ref = out[32][key]
        assert np.abs(ref).max() > 0.1  # not a degenerate all-zero map
        np.testing.assert_allclose(out[8][key][:, ::4, ::4], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        np.testing.assert_allclose(out[16][key][:, ::2, ::2], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # ... while the cells in between carry new information (not a blocky upsampling).
    assert not np.allclose(out[8]["features"][:, 1, 1], out[8]["features"][:, 0, 0], atol=1e-3)


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_flip_equivariance_pins_cells_to_pixels(stride):
    """Kernels symmetric under flips: the net commutes with flipping the image exactly iff
    every padding is symmetric and cell (i, j) is pixel (s*j, s*i) of an s*n + 1 input."""
    net = build_backbone("tiny", stride)
    randomise(net, seed=3, symmetric=True)
    x = np.random.default_rng(4).uniform(-1, 1, (1, 2 * stride + 1, 3 * stride + 1, 3)).astype(np.float32)
    a, b = run(net, x), run(net, x[:, ::-1, ::-1])
    for key in ("features", "mid_features"):
        np.testing.assert_allclose(b[key], a[key][:, ::-1, ::-1], rtol=1e-4, atol=1e-5 * np.abs(a[key]).max())


def test_impulse_response_is_centred_on_its_cell():
    """A single bright pixel at (x, y) = (s*j0, s*i0), off the image centre, gives a response
    symmetric about cell (i0, j0) (symmetric kernels): that cell sits exactly on the pixel.
    The tiny net's receptive field at stride 16 spans +-7 cells, so (i0, j0) is put >= 10
    cells from every border and the 5x5 window around it never sees the padding."""
    s = 16
    net = build_backbone("tiny", s)
    randomise(net, seed=5, symmetric=True)
    x = np.zeros((1, 24 * s + 1, 24 * s + 1, 3), np.float32)
    i0, j0 = 11, 13
    x[0, s * i0, s * j0] = 10.0
    base = run(net, np.zeros_like(x))["features"][0]
    resp = np.abs(run(net, x)["features"][0] - base).sum(-1)
    assert resp[i0, j0] == resp.max()
    np.testing.assert_allclose(resp[i0 - 2:i0 + 3, j0 - 2:j0 + 3], resp[i0 - 2:i0 + 3, j0 - 2:j0 + 3][::-1, ::-1],
                               rtol=1e-4, atol=1e-6)


def test_unit_schedule_matches_slim_stack_blocks_dense():
    by_name = lambda stride: {p.name: (p.stride, p.rate) for p in unit_schedule("resnet50", stride)}
    os8, os16, os32 = by_name(8), by_name(16), by_name(32)
    assert os32["conv2_block3"] == (2, 1) and os32["conv4_block6"] == (2, 1) and os32["conv5_block3"] == (1, 1)
    assert os16["conv4_block5"] == (1, 1) and os16["conv4_block6"] == (1, 1) and os16["conv5_block1"] == (1, 2)
    assert os8["conv3_block4"] == (1, 1) and os8["conv4_block1"] == (1, 2)
    assert os8["conv4_block6"] == (1, 2) and os8["conv5_block3"] == (1, 4)
    assert [p.conv_shortcut for p in unit_schedule("resnet50", 8)].count(True) == 4


def test_mid_features_is_the_middle_unit_of_conv4():
    assert mid_layer_name("resnet101") == "conv4_block12_out"
    assert mid_layer_name("resnet152") == "conv4_block18_out"
    assert mid_layer_name("resnet50") == "conv4_block3_out"
    net = build_backbone("tiny", 16)
    x = np.random.default_rng(6).uniform(-1, 1, (1, 33, 33, 3)).astype(np.float32)
    probe = keras.Model(net.input, net.get_layer(mid_layer_name("tiny")).output)
    np.testing.assert_allclose(run(net, x)["mid_features"], np.asarray(probe(x)), rtol=1e-6)


def test_resnet50_matches_keras_layer_names_order_and_shapes():
    ours = build_backbone("resnet50", 32)
    ref = keras.applications.ResNet50V2(weights=None, include_top=False)
    layout = lambda m: [(l.name, type(l).__name__, [(w.name, tuple(w.shape)) for w in l.weights])
                        for l in m.layers if l.weights]
    assert layout(ours) == layout(ref)
    assert ours.count_params() == ref.count_params()


def test_every_depth_is_specified():
    assert BACKBONES == tuple(SPECS)
    assert config.BACKBONES is BACKBONES          # one list of names, the backbone's
    assert [u for _, u in SPECS["resnet101"].stacks] == [3, 4, 23, 3]
    assert [u for _, u in SPECS["resnet152"].stacks] == [3, 8, 36, 3]
    assert SPECS["resnet50"].units == (3, 4, 6, 3)


def test_preprocess_scales_to_minus_one_one():
    x = np.array([[[0, 255, 51]]], np.uint8)
    y = preprocess(x)
    assert y.dtype.name == "float32"
    np.testing.assert_allclose(np.asarray(y), [[[-1.0, 1.0, 51 / 127.5 - 1]]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(preprocess(np.float32([127.5]))), [0.0], atol=1e-7)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="unknown backbone"):
        backbone_spec("resnet34")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("tiny", 4)
    with pytest.raises(ValueError, match="s\\*n \\+ 1"):
        build_backbone("tiny", 16, input_shape=(64, 65, 3))
    with pytest.raises(ValueError, match="height, width, 3"):
        build_backbone("tiny", 8, input_shape=(65, 65, 1))
    with pytest.raises(TypeError, match="preprocess"):
        preprocess(np.array(["a"]))
