"""Network speed: forward and train-step images/s, parameters, FLOPs, efficiency vs matmul peak.

    python benchmarks/model_speed.py --config personlab --size 401 --batch 1
    python benchmarks/model_speed.py --config personlab model.output_stride=16 --size 401 --batch 1

FLOPs per image are counted from the forward graph (every Conv2D / DepthwiseConv2D /
MatMul op: 2 * multiply-adds, read off the traced op shapes), so dilation and the heads
are included exactly. The machine's peak is a large float32 (or float16 with
``--mixed-precision``) matmul timed with TensorFlow in the same run; efficiency is the
forward FLOP rate divided by that peak. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from strongpose.config import load_config  # noqa: E402

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


def matmul_peak(n: int, dtype: tf.DType, seconds: float = 3.0) -> float:
    """FLOP/s of an n x n matmul chain in TensorFlow on the default device."""
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
    for _ in range(2):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
    iters, start = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
        iters += 1
    return (time.perf_counter() - start) / iters


def synthetic_targets(cfg, batch: int, cells: int) -> dict[str, tf.Tensor]:
    """Target and weight maps of the right shapes (values irrelevant for timing)."""
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="personlab", help="preset name or YAML path")
    parser.add_argument("--size", type=int, default=401, help="input side, s*n + 1")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="minimum timing per measurement")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy")
    parser.add_argument("--jit", action="store_true", help="XLA-compile forward and train step")
    parser.add_argument("--no-train", action="store_true", help="skip the train-step timing")
    parser.add_argument("--peak-n", type=int, default=2048, help="matmul side for the peak")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)

    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model

    cfg = load_config(args.config, [*args.overrides, f"model.input_size={args.size}"])
    stride = cfg.model.output_stride
    cells = (args.size - 1) // stride + 1
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    dtype = tf.float16 if args.mixed_precision else tf.float32
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
    fwd_ips = args.batch / sec_fwd
    achieved = flops * fwd_ips
    result = {
        "config": str(args.config), "backbone": cfg.model.backbone, "output_stride": stride,
        "size": args.size, "batch": args.batch, "mixed_precision": args.mixed_precision,
        "jit": args.jit, "device": "gpu" if gpu else "cpu",
        "params": int(infer.count_params()),
        "gflops_per_image": round(flops / 1e9, 2),
        "forward_images_per_s": round(fwd_ips, 3),
        "forward_ms_per_image": round(1e3 / fwd_ips, 1),
        "achieved_gflops": round(achieved / 1e9, 1),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "efficiency": round(achieved / peak, 3),
    }
    print(f"forward: {fwd_ips:.3f} img/s, {flops / 1e9:.1f} GFLOP/img, "
          f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of peak", file=sys.stderr)

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
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
