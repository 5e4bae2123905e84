"""strongpose.batch_norm.BatchNormalization (fused) against Keras' BatchNormalization.

On TensorFlow a training call of a 4-D NHWC input runs one FusedBatchNormV3 op and gives
Keras' outputs, gradients (inputs, gamma, beta) and moving statistics, in float32 and under
mixed_float16; every other case is the parent's graph. Config round trip; the backbone
builds it with unchanged variable names; JAX (subprocess) and tf.distribute replicas
(subprocess, two logical CPUs) agree with Keras too.
"""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO

from strongpose.batch_norm import BatchNormalization as Fused
from strongpose.resnet_v2 import build_backbone

tf = pytest.importorskip("tensorflow")
needs_tf = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                              reason="the fused kernel is TensorFlow's")

SHAPE = (4, 5, 6, 3)                   # NHWC, n = 120 values per channel
BN_ARGS = dict(momentum=0.9, epsilon=1.001e-5)
STEPS = 3


def make_pair(dtype: str = "float32", shape=SHAPE, **kw):
    """A Keras BatchNormalization and strongpose's fused one with the same random weights."""
    args = {**BN_ARGS, **kw}
    ref = keras.layers.BatchNormalization(dtype=dtype, **args)
    fused = Fused(dtype=dtype, **args)
    rng = np.random.default_rng(0)
    ref.build(shape)
    fused.build(shape)
    for a, b in zip(ref.weights, fused.weights):
        v = rng.uniform(0.5, 1.5, tuple(a.shape)).astype(np.float32)
        a.assign(v)
        b.assign(v)
    return ref, fused


def train_calls(layer, xs, weight):
    """``STEPS`` training calls; per call the output and d(sum(y * weight))/d(x, gamma, beta)."""
    outs, grads = [], []
    for x in xs:
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weight)
        g = tape.gradient(loss, [x, layer.gamma, layer.beta])
        outs.append(y.numpy().astype(np.float32))
        grads.append([v.numpy().astype(np.float32) for v in g])
    return outs, grads, [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]


def inputs(dtype, shape=SHAPE, steps=STEPS):
    rng = np.random.default_rng(1)
    return [rng.normal(2.0, 3.0, shape).astype(dtype) for _ in range(steps)]


def op_types(layer, x, training: bool, **kw) -> set[str]:
    """The op types of ``layer(x, training)`` traced as a graph."""
    fn = tf.function(lambda t: layer(t, training=training, **kw))
    return {op.type for op in fn.get_concrete_function(tf.constant(x)).graph.get_operations()}


@needs_tf
@pytest.mark.parametrize("policy,x_dtype,tol", [("float32", np.float32, 1e-5),
                                                ("mixed_float16", np.float16, 2e-3)])
def test_training_matches_keras(policy, x_dtype, tol):
    ref, fused = make_pair(policy)
    xs = inputs(x_dtype)
    weight = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype(np.float32))
    ref_out, ref_grads, ref_stats = train_calls(ref, xs, weight)
    out, grads, stats = train_calls(fused, xs, weight)
    assert fused.compute_dtype == ref.compute_dtype == ("float16" if policy != "float32" else "float32")
    for a, b in zip(out, ref_out):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    for step, ref_step in zip(grads, ref_grads):
        for a, b, name in zip(step, ref_step, ("inputs", "gamma", "beta")):
            scale = np.abs(b).max()
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=name)
    for a, b in zip(stats, ref_stats):     # biased variance, momentum 0.9 over 3 steps
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(stats[1], 1.0)  # the statistics did move


@needs_tf
def test_training_call_runs_the_fused_kernel():
    ref, fused = make_pair()
    x = inputs(np.float32)[0]
    assert "FusedBatchNormV3" in op_types(fused, x, training=True)
    assert "FusedBatchNormV3" not in op_types(ref, x, training=True)


@needs_tf
def test_single_value_per_channel_keeps_zero_variance():
    ref, fused = make_pair(shape=(1, 1, 1, 3))
    x = np.array([[[[1.0, -2.0, 3.0]]]], np.float32)
    # x - mean = 0: the output is beta (Keras' x * s + (beta - mean * s) rounds off ~1e-5)
    got, want = fused(x, training=True), ref(x, training=True)
    np.testing.assert_allclose(got, np.asarray(fused.beta)[None, None, None], rtol=1e-6)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(fused.moving_variance, ref.moving_variance, rtol=1e-6)


@needs_tf
@pytest.mark.parametrize("case", ["inference", "frozen", "mask", "rank3", "axis1",
                                  "synchronized", "renorm", "small_epsilon"])
def test_other_cases_are_the_parent_call(case):
    shape, kw, call_kw, training = SHAPE, {}, {}, True
    if case == "rank3":
        shape = SHAPE[1:]
    elif case == "axis1":
        kw = dict(axis=1)
    elif case in ("synchronized", "renorm"):
        kw = {case: True}
    elif case == "small_epsilon":
        kw = dict(epsilon=1e-6)
    ref, fused = make_pair(shape=shape, **kw)
    if case == "inference":
        training = False
    elif case == "frozen":
        ref.trainable = fused.trainable = False
    elif case == "mask":
        call_kw = dict(mask=tf.constant(np.arange(np.prod(SHAPE[:3])).reshape(SHAPE[:3]) % 3 > 0))
    x = inputs(np.float32, shape, 1)[0]
    assert "FusedBatchNormV3" not in op_types(fused, x, training, **call_kw)
    np.testing.assert_allclose(fused(x, training=training, **call_kw),
                               ref(x, training=training, **call_kw), rtol=1e-6, atol=1e-6)
    for a, b in zip(fused.weights, ref.weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_config_round_trip():
    layer = Fused(momentum=0.97, epsilon=2e-5, center=False, name="bn")
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is Fused
    assert clone.get_config() == layer.get_config()
    assert Fused.from_config(layer.get_config()).get_config() == layer.get_config()


def test_backbone_uses_it_with_keras_variable_names():
    net = build_backbone("tiny", 32, input_shape=(33, 33, 3))
    bns = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(type(l) is Fused for l in bns)
    assert type(bns[0]).__name__ == "BatchNormalization"   # Keras' .weights.h5 group names
    assert [w.name for w in bns[0].weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert bns[0].name == "conv2_block1_preact_bn" and bns[-1].name == "post_bn"


JAX_CODE = """
import numpy as np, keras
from strongpose.batch_norm import BatchNormalization as Fused
assert keras.backend.backend() == "jax"
x = np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 6, 3)).astype("float32")
ref, fused = keras.layers.BatchNormalization(momentum=0.9), Fused(momentum=0.9)
for layer in (ref, fused):
    layer.build(x.shape)
    y = layer(x, training=True)
np.testing.assert_array_equal(fused(x, training=True), ref(x, training=True))
np.testing.assert_array_equal(fused.moving_variance, ref.moving_variance)
assert not np.allclose(fused.moving_variance, 1.0)
print("ok")
"""

MIRRORED_CODE = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras
from strongpose.batch_norm import BatchNormalization as Fused
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x = np.random.default_rng(1).normal(2.0, 3.0, (8, 5, 6, 3)).astype("float32")
data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x).unbatch().batch(8))
batch = next(iter(data))
for synchronized in (False, True):
    with strategy.scope():
        ref = keras.layers.BatchNormalization(momentum=0.9, synchronized=synchronized)
        fused = Fused(momentum=0.9, synchronized=synchronized)
        ref.build(x.shape); fused.build(x.shape)
    step = tf.function(lambda layer, b: strategy.run(lambda t: layer(t, training=True), (b,)))
    for _ in range(2):
        want = strategy.gather(step(ref, batch), axis=0)
        got = strategy.gather(step(fused, batch), axis=0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(fused.non_trainable_weights, ref.non_trainable_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(fused.moving_variance, 1.0)
print("ok")
"""


def run_python(code: str, **env: str) -> None:
    e = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **env)
    p = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]


def test_jax_backend_is_keras_batch_norm():
    pytest.importorskip("jax")
    run_python(JAX_CODE, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")


@pytest.mark.slow
def test_mirrored_replicas_match_keras_with_and_without_sync():
    run_python(MIRRORED_CODE, KERAS_BACKEND="tensorflow")
