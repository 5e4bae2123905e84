"""One training run for tests/test_distribute.py, in its own process (devices and backends
are fixed when TensorFlow/JAX start).

    python tests/distribute_run.py --backend tensorflow --devices 2 --engine tf-mirrored \\
        --npz batches.npz --steps 2 --batch 4 OUT

Trains ``--steps`` steps of the tiny preset on the batches of ``--npz`` (memory_data) and
writes OUT/result.npz (OUT/worker<i>/ in process i > 0): the network's weights after
training (``w0``, ``w1``, ... named in ``names``), the same before (``i0``, ``i1``, ...) and the loss ``total`` of each step
(``losses``). ``--sgd``: plain SGD; ``--set key=value``: config overrides; ``--tfdata``:
the batches through ``tf.data.Dataset.from_generator``; ``--coordinator/--num-processes/
--process-id``: a JAX multi-process run. ``--devices N``: N logical CPU devices (TensorFlow)
or N XLA host devices (JAX). ``--no-tensorflow``: TensorFlow made unimportable first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="tensorflow")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--npz", required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=65)
    ap.add_argument("--tfdata", action="store_true", help="feed a tf.data.Dataset of the batches")
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int)
    ap.add_argument("--process-id", type=int)
    ap.add_argument("--no-tensorflow", action="store_true")
    ap.add_argument("--sgd", action="store_true",
                    help="plain SGD at train.learning_rate (updates proportional to gradients)")
    ap.add_argument("--set", action="append", default=[], help="config override")
    ap.add_argument("out")
    a = ap.parse_args()
    os.environ["KERAS_BACKEND"] = a.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if a.no_tensorflow:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
    if a.backend == "jax":
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={a.devices}"
        os.environ["JAX_PLATFORMS"] = "cpu"
    elif a.devices > 1:
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(a.devices)])
    sys.path.insert(0, str(REPO))
    import numpy as np
    import keras
    keras.config.disable_traceback_filtering()

    from strongpose import distribute
    from strongpose.config import load_config
    from strongpose.memory_data import NpzBatches
    from strongpose import training
    from strongpose.training import train
    if a.sgd:
        import keras
        training.build_optimizer = lambda cfg, steps=None: keras.optimizers.SGD(
            cfg.train.learning_rate)

    engine = distribute.select_engine(a.engine, coordinator=a.coordinator,
                                      num_processes=a.num_processes, process_id=a.process_id)
    print("engine:", engine.describe(), file=sys.stderr)
    cfg = load_config("tiny", [f"model.input_size={a.size}", f"train.batch_size={a.batch}",
                               f"train.steps={a.steps}", "train.checkpoint_every=1",
                               "train.warmup_steps=0", "train.learning_rate=0.01", *a.set])
    data = NpzBatches(a.npz, a.batch, input_size=a.size,
                      shard=(engine.process_id, engine.processes)
                      if engine.distribution is not None else (0, 1))
    if a.tfdata:
        import tensorflow as tf
        x, y = data[0]
        spec = (tf.TensorSpec((None,) + x.shape[1:], tf.float32),
                {k: tf.TensorSpec((None,) + v.shape[1:], tf.float32) for k, v in y.items()})
        gen = data
        data = tf.data.Dataset.from_generator(
            lambda: (gen[i] for i in range(10 ** 9)), output_signature=spec)
    class Initial(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [np.asarray(v.numpy()) for v in self.model.network.weights]

    initial = Initial()
    result = train(cfg, a.out, dataset=data, verbose=0, engine=engine, callbacks=[initial])
    variables = result.model.network.weights
    weights = [np.asarray(v.numpy()) for v in variables]
    out = Path(a.out) if engine.is_chief else Path(a.out) / f"worker{engine.process_id}"
    np.savez(out / "result.npz", losses=np.asarray(result.history["total"]),
             names=np.asarray([v.path for v in variables]),
             **{f"w{i}": w for i, w in enumerate(weights)},
             **{f"i{i}": w for i, w in enumerate(initial.weights)})
    print(f"done: {engine.describe()}; losses {result.history['total']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
