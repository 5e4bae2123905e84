"""Network speed: forward and train-step images/s, parameters, FLOPs, efficiency vs matmul peak.

    python benchmarks/model_speed.py --config personlab --size 401 --batch 1
    python benchmarks/model_speed.py --config personlab model.output_stride=16 --size 401 --batch 1
    KERAS_BACKEND=jax python benchmarks/model_speed.py --size 401 --batch 8 --mixed-precision

FLOPs per image are counted from the forward graph (every Conv2D / DepthwiseConv2D /
MatMul op: 2 * multiply-adds, read off the traced op shapes), so dilation and the heads
are included exactly. The machine's peak is a large float32 (or float16 / bfloat16 with
``--mixed-precision`` [``--bfloat16``]) matmul timed in the same run; efficiency is
the forward FLOP rate divided by that peak. The last stdout line is one JSON object.

Backends: with Keras' TensorFlow backend (the default) the forward pass and train step
are ``tf.function``s (``--jit``: XLA). With ``KERAS_BACKEND=jax`` (no TensorFlow needed)
they are ``jax.jit`` functions of ``model.stateless_call`` and, for the train step,
``jax.value_and_grad`` of the loss plus the optimizer's ``stateless_apply`` (the Keras 3
"training loop from scratch in JAX" recipe); FLOPs are counted the same way from the
traced jaxpr (``conv_general_dilated`` and ``dot_general``), the train step's too, and
XLA's own ``cost_analysis()`` count is reported beside them (on GPU it misses the cuDNN
convolutions, which are custom calls, so it is near zero there). ``--matmul-precision
highest`` gives true float32; JAX's default lets the GPU use TF32, as TensorFlow does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from strongpose import cli  # noqa: E402
from strongpose.config import load_config  # noqa: E402  (no Keras: --help stays fast)

POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}

_FLOP_OPS = {"Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "Conv2DBackpropInput"}


def graph_flops(concrete: tf.types.experimental.ConcreteFunction) -> float:
    """FLOPs (2 x multiply-adds) of the conv and matmul ops of a traced function, batch included."""
    total = 0.0
    graphs = [concrete.graph]
    while graphs:
        graph = graphs.pop()
        for fn in getattr(graph, "_functions", {}).values():  # nested functions (while/cond bodies)
            if hasattr(fn, "graph"):
                graphs.append(fn.graph)
        for op in graph.get_operations():
            if op.type not in _FLOP_OPS:
                continue
            out = op.outputs[0].shape
            if not out.is_fully_defined():
                continue
            if op.type in ("Conv2D", "Conv2DBackpropInput"):
                kh, kw, cin, cout = op.inputs[1].shape
                total += 2.0 * np.prod(out[:-1]) * kh * kw * cin * cout
            elif op.type == "DepthwiseConv2dNative":
                kh, kw, cin, mult = op.inputs[1].shape
                total += 2.0 * np.prod(out) * kh * kw
            else:
                a = op.inputs[0].shape
                transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
                total += 2.0 * np.prod(out) * (a[-2] if transposed else a[-1])
    return total


def matmul_peak(n: int, dtype, seconds: float = 3.0) -> float:
    """FLOP/s of an n x n matmul chain in TensorFlow on the default device."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a / np.sqrt(n), dtype)

    @tf.function
    def chain(x: tf.Tensor) -> tf.Tensor:
        for _ in range(8):
            x = tf.matmul(x, a)
        return x

    chain(a).numpy()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chain(a).numpy()
        reps += 1
    elapsed = time.perf_counter() - start
    return reps * 8 * 2.0 * n ** 3 / elapsed


def _time(fn, x, min_seconds: float, min_iters: int) -> float:
    """Seconds per call (after two warm-up calls)."""
    import tensorflow as tf

    for _ in range(2):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
        iters += 1
    return (time.perf_counter() - start) / iters


def synthetic_targets(cfg, batch: int, cells: int) -> dict:
    """Target and weight maps of the right shapes (values irrelevant for timing)."""
    import tensorflow as tf

    k, e2 = cfg.skeleton.num_keypoints, 2 * cfg.skeleton.num_edges
    shape = lambda c: (batch, cells, cells, c)  # noqa: E731
    rnd = lambda c: tf.random.uniform(shape(c))  # noqa: E731
    return {
        "heatmap": tf.cast(rnd(k) > 0.9, tf.float32), "heatmap_weight": tf.ones(shape(k)),
        "short": rnd(2 * k) * 10, "short_weight": tf.cast(rnd(k) > 0.9, tf.float32),
        "mid": rnd(2 * e2) * 10, "mid_weight": tf.cast(rnd(e2) > 0.9, tf.float32),
        "long": rnd(2 * k) * 10, "long_weight": tf.cast(rnd(k) > 0.5, tf.float32),
        "body": tf.cast(rnd(1) > 0.5, tf.float32), "body_weight": tf.ones(shape(1)),
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, time the network, print and return the figures (raises on bad input)."""
    parser = cli.ArgumentParser(prog="model_speed.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="personlab", help="preset name or YAML path")
    parser.add_argument("--size", type=int, default=401, help="input side, s*n + 1")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="minimum timing per measurement")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy")
    parser.add_argument("--bfloat16", action="store_true",
                        help="with --mixed-precision: mixed_bfloat16 instead of mixed_float16")
    parser.add_argument("--jit", action="store_true", help="XLA-compile forward and train step (TF; always on JAX)")
    parser.add_argument("--no-train", action="store_true", help="skip the train-step timing")
    parser.add_argument("--peak-n", type=int, default=2048, help="matmul side for the peak")
    parser.add_argument("--matmul-precision", default=None, choices=["default", "high", "highest"],
                        help="JAX only: jax.default_matmul_precision for float32 (default: JAX's own)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.seconds <= 0 or args.peak_n < 1:
        parser.error("--batch and --peak-n must be >= 1, --seconds > 0")
    if args.bfloat16 and not args.mixed_precision:
        parser.error("--bfloat16 needs --mixed-precision")
    # From here on: None (float32), "float16" or "bfloat16".
    args.mixed_precision = ("bfloat16" if args.bfloat16 else "float16") if args.mixed_precision else None

    cfg = load_config(args.config, [*args.overrides, f"model.input_size={args.size}"])
    keras = cli.import_quietly("keras")   # TensorFlow too, with its backend; start-up lines dropped
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(POLICIES[args.mixed_precision])
    run = _run_jax if keras.backend.backend() == "jax" else _run_tensorflow
    result = run(args, cfg)
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result))
    return result


def _header(args, cfg, backend: str, device: str, params: int) -> dict:
    import keras

    return {"config": str(args.config), "backend": backend, "backbone": cfg.model.backbone,
            "output_stride": cfg.model.output_stride, "size": args.size, "batch": args.batch,
            "mixed_precision": bool(args.mixed_precision),
            "policy": keras.mixed_precision.global_policy().name,
            "jit": args.jit or backend == "jax", "device": device, "params": params}


def _forward_figures(flops: float, fwd_ips: float, peak: float) -> dict:
    achieved = flops * fwd_ips
    print(f"forward: {fwd_ips:.3f} img/s, {flops / 1e9:.1f} GFLOP/img, "
          f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of peak", file=sys.stderr)
    return {"gflops_per_image": round(flops / 1e9, 2),
            "forward_images_per_s": round(fwd_ips, 3),
            "forward_ms_per_image": round(1e3 / fwd_ips, 2),
            "achieved_gflops": round(achieved / 1e9, 1),
            "matmul_peak_gflops": round(peak / 1e9, 1),
            "efficiency": round(achieved / peak, 3)}


# ------------------------------------------------------------------ TensorFlow
def _run_tensorflow(args, cfg) -> dict:
    """Forward and train-step timing with tf.function (the original path)."""
    import keras
    import tensorflow as tf

    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model

    stride = cfg.model.output_stride
    cells = (args.size - 1) // stride + 1
    dtype = tf.as_dtype(args.mixed_precision) if args.mixed_precision else tf.float32
    gpu = bool(tf.config.list_physical_devices("GPU"))

    peak = matmul_peak(args.peak_n, dtype)
    print(f"matmul {args.peak_n}^2 {dtype.name}: {peak / 1e9:.1f} GFLOP/s", file=sys.stderr)

    model = build_model(cfg, output_stride=stride, training_outputs=True)
    infer = build_model(cfg, output_stride=stride, training_outputs=False)
    images = tf.random.uniform((args.batch, args.size, args.size, 3), 0, 255)

    forward = tf.function(lambda x: infer(x, training=False), jit_compile=args.jit)
    concrete = forward.get_concrete_function(tf.TensorSpec(images.shape, tf.float32))
    flops = graph_flops(concrete) / args.batch
    sec_fwd = _time(forward, images, args.seconds, 3)
    result = _header(args, cfg, "tensorflow", "gpu" if gpu else "cpu", int(infer.count_params()))
    result.update(_forward_figures(flops, args.batch / sec_fwd, peak))

    if not args.no_train:
        loss_fn = StrongPoseLoss.from_config(cfg)
        optimizer = keras.optimizers.Adam(cfg.train.learning_rate)
        targets = synthetic_targets(cfg, args.batch, cells)

        @tf.function(jit_compile=args.jit)
        def train_step(x):
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                losses = loss_fn(targets, outputs, global_batch_size=args.batch)
                scaled = optimizer.scale_loss(losses["total"])
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return losses["total"]

        sec_train = _time(train_step, images, args.seconds, 3)
        result["train_images_per_s"] = round(args.batch / sec_train, 3)
        print(f"train step: {args.batch / sec_train:.3f} img/s", file=sys.stderr)

    result["machine"] = f"{platform.machine()} {os.cpu_count()} cpu" + (
        f", {tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0]).get('device_name', 'GPU')}"
        if gpu else "")
    result["software"] = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    return result


# ------------------------------------------------------------------------- JAX
_JAX_FLOP_PRIMITIVES = ("conv_general_dilated", "dot_general")


def _sub_jaxprs(value):
    """Jaxprs nested in an equation parameter (pjit, custom_jvp/vjp, cond branches, loops)."""
    if hasattr(value, "eqns"):
        yield value.jaxpr if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns") else value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr) -> float:
    """FLOPs (2 x multiply-adds) of the convolutions and matrix products of a (closed) jaxpr.

    Convolution: ``2 * |output| * kernel window * input channels per group``; dot_general:
    ``2 * |output| * contracted size``. Nested jaxprs are walked (loop bodies once).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec   # (out ch, in ch, spatial...)
            window = float(np.prod([rhs[d] for d in rhs_spec[2:]]))
            total += 2.0 * float(np.prod(out)) * window * rhs[rhs_spec[1]]
        elif name == "dot_general":
            lhs, out = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
            (contract, _), _ = eqn.params["dimension_numbers"]
            total += 2.0 * float(np.prod(out)) * float(np.prod([lhs[d] for d in contract]))
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                total += jaxpr_flops(sub)
    return total


def _xla_flops(compiled) -> float | None:
    """XLA's own FLOP count of a compiled function, if it reports one."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def jax_matmul_peak(n: int, dtype: str, seconds: float = 3.0) -> float:
    """FLOP/s of an n x n ``jnp.matmul`` chain in JAX on the default device."""
    import jax
    import jax.numpy as jnp

    a = (jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32) / np.sqrt(n)).astype(dtype)

    @jax.jit
    def chain(x, m):
        for _ in range(8):
            x = jnp.matmul(x, m)
        return x

    chain(a, a).block_until_ready()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chain(a, a).block_until_ready()
        reps += 1
    return reps * 8 * 2.0 * n ** 3 / (time.perf_counter() - start)


def _time_jax(step, min_seconds: float, min_iters: int) -> float:
    """Seconds per call of ``step()`` (after two warm-up calls), waiting for its results."""
    import jax

    for _ in range(2):
        jax.block_until_ready(step())
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        jax.block_until_ready(step())
        iters += 1
    return (time.perf_counter() - start) / iters


def _jax_targets(cfg, batch: int, cells: int) -> dict:
    """Target and weight maps of the right shapes as NumPy (values irrelevant for timing)."""
    rng = np.random.default_rng(0)
    k, e2 = cfg.skeleton.num_keypoints, 2 * cfg.skeleton.num_edges
    shape = lambda c: (batch, cells, cells, c)  # noqa: E731
    rnd = lambda c: rng.random(shape(c), dtype=np.float32)  # noqa: E731
    one = lambda c: np.ones(shape(c), np.float32)  # noqa: E731
    return {
        "heatmap": (rnd(k) > 0.9).astype(np.float32), "heatmap_weight": one(k),
        "short": rnd(2 * k) * 10, "short_weight": (rnd(k) > 0.9).astype(np.float32),
        "mid": rnd(2 * e2) * 10, "mid_weight": (rnd(e2) > 0.9).astype(np.float32),
        "long": rnd(2 * k) * 10, "long_weight": (rnd(k) > 0.5).astype(np.float32),
        "body": (rnd(1) > 0.5).astype(np.float32), "body_weight": one(1),
    }


def _peak_bytes(device) -> int | None:
    try:
        return int(device.memory_stats()["peak_bytes_in_use"])
    except Exception:  # noqa: BLE001 - CPU devices have no memory stats
        return None


def _run_jax(args, cfg) -> dict:
    """Forward and train-step timing with jax.jit over Keras' stateless API."""
    import contextlib

    import jax

    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model

    device = jax.devices()[0]
    precision = (jax.default_matmul_precision(args.matmul_precision)
                 if args.matmul_precision else contextlib.nullcontext())
    with precision:
        return _run_jax_inner(args, cfg, jax, device, build_model, StrongPoseLoss)


def _run_jax_inner(args, cfg, jax, device, build_model, StrongPoseLoss) -> dict:
    import keras

    stride = cfg.model.output_stride
    cells = (args.size - 1) // stride + 1
    dtype = args.mixed_precision or "float32"

    peak = jax_matmul_peak(args.peak_n, dtype)
    print(f"matmul {args.peak_n}^2 {dtype}: {peak / 1e9:.1f} GFLOP/s", file=sys.stderr)

    infer = build_model(cfg, output_stride=stride, training_outputs=False)
    images = jax.device_put(np.random.default_rng(0).uniform(
        0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32))
    i_tv = [v.value for v in infer.trainable_variables]
    i_ntv = [v.value for v in infer.non_trainable_variables]

    def forward(tv, ntv, x):
        return infer.stateless_call(tv, ntv, x, training=False)[0]

    flops = jaxpr_flops(jax.make_jaxpr(forward)(i_tv, i_ntv, images)) / args.batch
    start = time.perf_counter()
    fwd_compiled = jax.jit(forward).lower(i_tv, i_ntv, images).compile()
    fwd_compile_s = time.perf_counter() - start
    xla_fwd = _xla_flops(fwd_compiled)
    sec_fwd = _time_jax(lambda: fwd_compiled(i_tv, i_ntv, images), args.seconds, 3)
    result = _header(args, cfg, "jax", device.platform, int(infer.count_params()))
    result.update(_forward_figures(flops, args.batch / sec_fwd, peak))
    result["xla_gflops_per_image"] = round(xla_fwd / args.batch / 1e9, 2) if xla_fwd else None
    result["forward_compile_s"] = round(fwd_compile_s, 1)
    result["forward_peak_gib"] = (round(_peak_bytes(device) / 2 ** 30, 2)
                                  if _peak_bytes(device) is not None else None)
    del fwd_compiled, i_tv, i_ntv, infer

    if not args.no_train:
        model = build_model(cfg, output_stride=stride, training_outputs=True)
        loss_fn = StrongPoseLoss.from_config(cfg)
        optimizer = keras.optimizers.Adam(cfg.train.learning_rate)
        if args.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        targets = jax.device_put(_jax_targets(cfg, args.batch, cells))
        state = ([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables],
                 [v.value for v in optimizer.variables])

        def loss_and_updates(tv, ntv, ov, x, t):
            outputs, ntv = model.stateless_call(tv, ntv, x, training=True)
            total = loss_fn(t, outputs, global_batch_size=args.batch)["total"]
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, ov))):
                scaled = optimizer.scale_loss(total)
            return scaled, (total, ntv)

        grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

        def train_step(state, x, t):
            tv, ntv, ov = state
            (_, (total, ntv)), grads = grad_fn(tv, ntv, ov, x, t)
            tv, ov = optimizer.stateless_apply(ov, grads, tv)
            return total, (tv, ntv, ov)

        train_flops = jaxpr_flops(jax.make_jaxpr(train_step)(state, images, targets)) / args.batch
        start = time.perf_counter()
        train_compiled = jax.jit(train_step, donate_argnums=0).lower(state, images, targets).compile()
        train_compile_s = time.perf_counter() - start
        holder = [state]

        def step():
            total, holder[0] = train_compiled(holder[0], images, targets)
            return total

        sec_train = _time_jax(step, args.seconds, 3)
        loss = float(step())
        train_ips = args.batch / sec_train
        result.update({
            "train_images_per_s": round(train_ips, 3),
            "train_ms_per_image": round(1e3 / train_ips, 2),
            "train_gflops_per_image": round(train_flops / 1e9, 2),
            "train_achieved_gflops": round(train_flops * train_ips / 1e9, 1),
            "train_efficiency": round(train_flops * train_ips / peak, 3),
            "train_compile_s": round(train_compile_s, 1),
            "train_loss_finite": bool(np.isfinite(loss)),
            "peak_gib": (round(_peak_bytes(device) / 2 ** 30, 2)
                         if _peak_bytes(device) is not None else None),
        })
        print(f"train step: {train_ips:.3f} img/s, {train_flops / 1e9:.1f} GFLOP/img", file=sys.stderr)

    result["matmul_precision"] = args.matmul_precision or "jax default"
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cpu, {device.device_kind}"
    result["software"] = f"jax {jax.__version__}, keras {keras.__version__}"
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="model_speed.py"))
