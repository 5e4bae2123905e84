"""Training of StrongPose with Keras ``fit``, on one device or on the engine
:mod:`strongpose.distribute` picks (several GPUs, several machines; docs/DISTRIBUTED.md).

    from strongpose.config import load_config
    from strongpose.training import train

    cfg = load_config("tiny", ["data.coco_root=synth", "data.train_split=train"])
    result = train(cfg, "runs/tiny")          # runs/tiny/{model.weights.h5, config.yaml, ...}

Pieces:

- :func:`build_optimizer`: AdamW (decoupled weight decay ``train.weight_decay``; biases and
  normalisation ``gamma``/``beta`` excluded), learning rate :class:`WarmupCosine` (linear
  warm-up over ``train.warmup_steps``, then cosine to 0 at ``train.steps``), EMA of the
  weights (``use_ema``, ``ema_momentum = train.polyak_decay``) when ``polyak_decay > 0``.
- :class:`TrainingModel`: a ``keras.Model`` wrapping the network and
  :class:`strongpose.losses.StrongPoseLoss`. It overrides only ``compute_loss`` (not
  ``train_step``), so Keras' own train step does the gradient tape, the loss scaling of
  mixed precision (``compile`` wraps the optimizer in ``LossScaleOptimizer`` when the
  dtype policy is ``mixed_float16``) and the optimizer update; every loss term is a
  ``Mean`` metric shown by ``fit`` (``heatmap, body, short, mid, long, inter_*, total``).
- :class:`NonFiniteLossGuard`: a callback that raises :class:`NonFiniteLossError` naming
  the step and the terms as soon as a loss is NaN/Inf. It raises (rather than setting
  ``stop_training``) so ``fit`` never reaches ``on_epoch_end``, and no checkpoint of that state
  is written.
- Watching (:func:`strongpose.callbacks.watching_callbacks`): validation AP on the first
  ``train.eval_images`` images of ``data.val_split`` every ``train.eval_every`` steps and
  at the end (EMA weights), ``best.weights.h5``; TensorBoard under ``tensorboard/``.
- :func:`train`: output folder checked writable, with room for what the run will write
  (:func:`check_disk_space`), first; the latest checkpoint found
  (:mod:`strongpose.checkpoints`); data (``make_dataset``, training mode, starting at the
  checkpoint's example of the stream), network, optimizer, checkpoint restored (weights,
  optimizer slots, iteration count, EMA weights, loss scale); ``fit`` (one epoch per
  ``train.checkpoint_every`` steps, for the logs) with a ``CheckpointSaver`` writing
  ``output_dir/checkpoints/step-*`` every ``train.checkpoint_every`` steps, at the last
  step and on SIGINT/SIGTERM, so a second run in the same folder (with more
  ``train.steps``, or after a kill) continues with the same batches as a run that never
  stopped. At the end: ``model.weights.h5`` (the network's weights, loadable into
  ``build_model(cfg)``; the EMA weights when EMA is on: ``fit`` calls
  ``optimizer.finalize_variable_values`` at its end) and ``config.yaml`` (``cfg.to_dict()``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np
import yaml
from keras import ops

from strongpose import checkpoints, distribute
from strongpose.callbacks import (BEST_WEIGHTS_FILE, StepCountingCallback, ValidationAP,
                                  watching_callbacks)
from strongpose.config import Config
from strongpose.losses import StrongPoseLoss

WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.csv"
LOG_BYTES = 16 << 20     # disk space for config.yaml, log.csv, best.json, TensorBoard scalars
# Variables kept out of weight decay: biases and normalisation scales/offsets.
NO_DECAY_NAMES = ("bias", "gamma", "beta")


class NonFiniteLossError(ValueError):
    """A loss term became NaN or Inf during training."""


# ------------------------------------------------------------------ optimizer
@keras.saving.register_keras_serializable(package="strongpose")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """``peak * (step + 1) / warmup`` for ``step < warmup``, then cosine from ``peak`` to 0
    at ``total_steps`` (and 0 after)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0) -> None:
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        decay = float(max(self.total_steps - self.warmup_steps, 1))
        warmup_lr = self.peak * (step + 1.0) / warm
        progress = ops.clip((step - self.warmup_steps) / decay, 0.0, 1.0)
        cosine_lr = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup_lr, cosine_lr)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def warmup_steps_for(cfg: Config, steps: int) -> int:
    """``train.warmup_steps``, or a tenth of ``steps`` where it would not end before them
    (the tiny preset trains 200 steps under the default warm-up of 1000)."""
    warmup = int(cfg.train.warmup_steps)
    return warmup if warmup < steps else steps // 10


def build_optimizer(cfg: Config, steps: Optional[int] = None) -> keras.optimizers.Optimizer:
    """AdamW with warm-up + cosine learning rate and, if ``train.polyak_decay > 0``, EMA.

    Weight decay is Keras' decoupled one (``w -= lr * weight_decay * w`` each step), not on
    variables named ``bias``, ``gamma`` or ``beta``. ``steps``: the schedule's length
    (default ``train.steps``). The loss-scale wrapper of mixed precision is added by
    ``compile`` (see :func:`compile_model`), not here.
    """
    t = cfg.train
    steps = int(t.steps if steps is None else steps)
    schedule = WarmupCosine(t.learning_rate, steps, warmup_steps_for(cfg, steps))
    ema = t.polyak_decay > 0
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay,
                                 use_ema=ema, ema_momentum=t.polyak_decay if ema else 0.99)
    opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return opt


# ------------------------------------------------------------------ model
class TrainingModel(keras.Model):
    """The network plus its loss: ``fit`` on ``(images, targets)`` batches.

    ``call`` is the network (dict of maps); ``compute_loss`` is ``StrongPoseLoss``'s
    ``total`` for the batch (divided by the global batch, this replica's batch times
    :func:`strongpose.distribute.replicas_in_sync`) and updates
    one ``Mean`` metric per term, so ``fit``'s logs and bar show every term.
    """

    def __init__(self, network: keras.Model, loss: StrongPoseLoss, target_encoder: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.pose_loss = loss
        self.target_encoder = target_encoder  # y = target inputs -> targets in the step
        self.term_names = self._term_names(network)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.term_names}

    @staticmethod
    def _term_names(network: keras.Model) -> list[str]:
        from strongpose import maps
        from strongpose.losses import LOSS_TERMS
        outputs = set(network.output.keys()) if isinstance(network.output, dict) else set()
        names = list(LOSS_TERMS)
        names += [f"inter_{k}" for k in maps.INTERMEDIATE
                  if maps.intermediate_output_key(k) in outputs]
        return names + ["total"]

    def call(self, images, training=False):
        return self.network(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Divided by the GLOBAL batch: under tf.distribute each replica sees its shard and
        # the replicas' gradients are summed (strongpose.distribute).
        replicas = distribute.replicas_in_sync()
        if self.target_encoder is not None:  # data_generator.TrainStepTargets
            y = self.target_encoder(y)
        losses = self.pose_loss(y, y_pred, ops.shape(x)[0] * replicas)
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name] * replicas)  # the metric averages replicas
        total = losses["total"]
        if self.losses:  # regularisers of layers, if any (each replica adds its share)
            total = total + ops.cast(ops.sum(ops.stack(self.losses)), "float32") / replicas
        return total

    @property
    def metrics(self):
        # Only the per-term trackers ("total" is the loss): no duplicate "loss" entry.
        return list(self.trackers.values())

    def get_metrics_result(self):
        # Under MultiWorkerMirroredStrategy Keras reduces each step's logs with
        # strategy.reduce("MEAN", v, axis=0), which fails on scalars: give them one axis.
        return distribute.logs_for_multi_worker(super().get_metrics_result())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (TensorFlow trainer) reduces a first distributed batch eagerly here only to
        # learn input shapes; under MultiWorkerMirroredStrategy that reduce fails
        # ("Attempt to convert a value (PerReplica...)", keras-team/keras#20585). train()
        # builds the model before fit, so no batch is needed: build what is left from none.
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is not None and all(layer.built for layer in self._flatten_layers()):
            with strategy.scope():
                self._symbolic_build()
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def compile_model(model: TrainingModel, optimizer: keras.optimizers.Optimizer) -> None:
    """``compile`` with the optimizer; Keras wraps it in ``LossScaleOptimizer`` itself when
    the model's dtype policy is ``mixed_float16`` (``auto_scale_loss=True``).

    The train step is XLA-compiled on JAX (without it Keras runs the step op by op: 30x
    slower on a GPU; see docs/BENCHMARKS.md) and a ``tf.function`` without XLA on
    TensorFlow, as before."""
    model.compile(optimizer=optimizer, jit_compile=keras.backend.backend() == "jax")


def step_count(model: keras.Model) -> int:
    """Optimizer steps taken so far (restored with the optimizer on resume)."""
    return int(ops.convert_to_numpy(model.optimizer.iterations))


# ------------------------------------------------------------------ callbacks
class NonFiniteLossGuard(StepCountingCallback):
    """Raise :class:`NonFiniteLossError` at the first step whose loss terms are not finite.

    Reads the running means of the epoch that ``fit`` passes on: a NaN/Inf step makes its
    mean NaN/Inf at that very step. Place it before the ``CheckpointSaver``; raising ends
    ``fit`` before any checkpoint of the bad state. ``first_step``: steps done before this
    ``fit`` (a resumed run); the message names the global step.
    """

    def __init__(self, first_step: int = 0) -> None:
        super().__init__(int(first_step))

    def on_train_batch_end(self, batch, logs=None):
        step = self.count()
        bad = []
        for name, value in (logs or {}).items():
            try:
                v = float(np.asarray(ops.convert_to_numpy(value)))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                bad.append(f"{name}={v}")
        if bad:
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"training stopped at step {step}: non-finite loss ({', '.join(bad)}); "
                "no checkpoint of this state was written")


class Throughput(keras.callbacks.Callback):
    """Images per second of the train steps (first ``skip`` steps left out: tracing)."""

    def __init__(self, batch_size: int, skip: int = 2) -> None:
        super().__init__()
        self.batch_size, self.skip = int(batch_size), int(skip)
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)

    @property
    def images_per_second(self) -> Optional[float]:
        times = self.times[self.skip:]
        return self.batch_size * len(times) / sum(times) if times else None


# ------------------------------------------------------------------ training
def check_writable(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` and check a file can be written there; OSError otherwise."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write_test_"):
            pass
    except OSError as exc:
        raise OSError(f"output folder {str(out)!r} is not writable: "
                      f"{exc.strerror or exc}") from exc
    return out


def disk_space_needed(cfg: Config, output_dir: str | os.PathLike) -> int:
    """Bytes a run of ``cfg`` will still write into ``output_dir`` at its peak: its
    ``train.keep_checkpoints`` checkpoints plus the one written before the oldest is
    deleted, ``model.weights.h5`` and ``best.weights.h5`` (each twice while replaced) and
    the logs, less what the files it replaces take there already (a resumed run). Sizes
    are estimated from the config (:func:`strongpose.checkpoints.checkpoint_bytes`); the
    data cache is not counted."""
    out = Path(output_dir)
    weights_files = 2 if int(cfg.train.eval_images) > 0 else 1
    total = ((int(cfg.train.keep_checkpoints) + 1) * checkpoints.checkpoint_bytes(cfg)
             + 2 * weights_files * checkpoints.weights_bytes(cfg) + LOG_BYTES)
    folder = out / checkpoints.CHECKPOINT_DIR
    present = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    present += [p for p in (out / WEIGHTS_FILE, out / BEST_WEIGHTS_FILE) if p.is_file()]
    return max(0, total - sum(p.stat().st_size for p in present))


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_disk_space(cfg: Config, output_dir: str | os.PathLike) -> int:
    """OSError (one line: the folder, its free space, the space needed) unless the disk of
    ``output_dir`` has room for what the run will write (:func:`disk_space_needed`);
    returns the bytes needed."""
    out = Path(output_dir)
    needed = disk_space_needed(cfg, out)
    free = shutil.disk_usage(out).free
    if free < needed:
        raise OSError(f"output folder {str(out)!r} has {_gib(free)} free, the run needs about "
                      f"{_gib(needed)} ({int(cfg.train.keep_checkpoints)} checkpoints of "
                      f"{_gib(checkpoints.checkpoint_bytes(cfg))} + 1 being written, the "
                      "weights files, logs): free some space, lower train.keep_checkpoints "
                      "or use another folder")
    return needed


def steps_per_epoch_for(cfg: Config) -> int:
    """Steps of one ``fit`` epoch (one line of logs): ``train.checkpoint_every`` (else
    ``log_every``), at most ``train.steps``. Checkpoints do not depend on it."""
    t = cfg.train
    every = int(t.checkpoint_every or t.log_every or t.steps)
    return max(1, min(every, int(t.steps)))


def saved_step(output_dir: str | os.PathLike) -> int:
    """The step a run in ``output_dir`` would resume at (0: no checkpoint)."""
    latest = checkpoints.CheckpointManager(Path(output_dir) / checkpoints.CHECKPOINT_DIR).latest()
    return latest.step if latest else 0


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training; the state after the last step was checkpointed."""


@dataclass
class TrainResult:
    """What :func:`train` did."""

    model: TrainingModel             # the network is model.network (EMA weights if EMA on)
    history: dict[str, list[float]]  # per epoch run now: every loss term
    initial_step: int                # 0, or the step resumed at
    steps: int                       # training steps done (batches; optimizer.iterations
                                     # is fewer where mixed precision skipped a step)
    weights_path: Path
    config_path: Path
    images_per_second: Optional[float]
    validation: Optional[dict[str, float]] = None  # last validation figures (AP, AP50, ...)
    best_weights: Optional[Path] = None            # best.weights.h5 (best validation AP)
    checkpoint: Optional[Path] = None  # the latest checkpoint folder


def train(cfg: Config, output_dir: Optional[str | os.PathLike] = None, *,
          split: Optional[str] = None, image_dir: Optional[str | os.PathLike] = None,
          dataset: Any = None, seed: int = 0, verbose: int | str = "auto",
          callbacks: Optional[list] = None,
          engine: Optional[distribute.Engine] = None) -> TrainResult:
    """Train ``cfg``'s network on ``engine``; resume if ``output_dir`` holds a checkpoint.

    Args:
        cfg: the config (``train.*`` for the optimisation, ``data.*`` for the data).
        output_dir: default ``train.output_dir``; gets ``config.yaml``, ``log.csv``,
            ``checkpoints/`` (:mod:`strongpose.checkpoints`: every ``train.checkpoint_every``
            steps and at exit, the newest ``train.keep_checkpoints`` kept), ``data_cache/``
            and ``model.weights.h5``.
        split: a split name of ``cfg.data`` or a keypoints JSON path (default
            ``data.train_split``); ``image_dir`` its images (default for a split:
            ``data.coco_root/<split>``).
        dataset: batches ``(images, targets)`` to use instead (repeating; tests, custom data):
            a ``tf.data.Dataset`` of global batches, or e.g. a ``memory_data.NpzBatches``
            (no TensorFlow needed; in a multi-process JAX run, this process's share); a
            resumed run skips the batches already trained (``dataset.skip``).
        seed: weights initialisation and data stream; a resumed run continues the same
            stream where the checkpoint left it (same batches as a run that never stopped).
        verbose: ``fit``'s (progress bar: "auto"/1, 2 one line per epoch, 0 silent).
        callbacks: more Keras callbacks.
        engine: a :class:`strongpose.distribute.Engine` (default ``select_engine("auto")``);
            the network is built, compiled and fitted in its scope. Processes other than
            the chief write their files under ``output_dir/worker<id>``.
    Raises:
        OSError: ``output_dir`` not writable, or its disk has too little free space for the
            checkpoints and weights files (:func:`check_disk_space`), before anything is
            built; a checkpoint write that fails (e.g. the disk filled up meanwhile): the
            previous checkpoint stays loadable.
        CheckpointError: the checkpoint in ``output_dir`` is for another network.
        NonFiniteLossError: a loss term became NaN/Inf (message: step and terms).
        TrainingInterrupted: SIGINT/SIGTERM; the state after the last step is checkpointed.
    """
    engine = engine or distribute.select_engine("auto")
    engine.per_replica_batch(cfg.train.batch_size)  # DistributeError if not divisible
    out = Path(output_dir if output_dir is not None else cfg.train.output_dir)
    out = check_writable(out if engine.is_chief else out / f"worker{engine.process_id}")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(out)))
    check_disk_space(cfg, out)
    steps, batch_size = int(cfg.train.steps), int(cfg.train.batch_size)
    spe = steps_per_epoch_for(cfg)

    # -- checkpoints: where to resume (before anything is built) ---------------------------
    manager = checkpoints.CheckpointManager.from_config(cfg, out)
    manager.remove_partial(other_processes_only=True)
    latest = manager.latest()
    if latest is not None:
        manager.check_compatible(latest, cfg)
    start = latest.step if latest else 0
    start_example = latest.examples if latest else 0
    if latest is not None and latest.manifest.get("seed", seed) != seed:
        warnings.warn(f"resuming {latest.path} (seed {latest.manifest['seed']}) with seed "
                      f"{seed}: the data stream differs from the first run's", stacklevel=2)

    from strongpose.model import build_model

    keras.utils.set_random_seed(seed)
    from strongpose.data_generator import TrainStepTargets, targets_in_train_step
    in_step = dataset is None and targets_in_train_step()
    if dataset is None:
        from strongpose.data_generator import make_dataset  # TensorFlow
        dataset = make_dataset(cfg, split or cfg.data.train_split, image_dir,
                               out / "data_cache", training=True, seed=seed,
                               start=start_example, progress=verbose not in (0, "0"),
                               with_targets=not in_step)
    else:
        dataset = checkpoints.skip_batches(dataset, start)
    dataset = engine.prepare_dataset(dataset)

    previous_policy = keras.mixed_precision.global_policy()
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy(f"mixed_{cfg.train.mixed_dtype}")
    try:
        with engine.scope():
            network = build_model(cfg, training_outputs=True)
            if cfg.train.sync_batchnorm:
                distribute.synchronize_batchnorm(network, engine)
            model = TrainingModel(network, StrongPoseLoss.from_config(cfg),
                                  name="strongpose_training",
                                  target_encoder=TrainStepTargets.from_config(cfg) if in_step else None)
            compile_model(model, build_optimizer(cfg))
            size = int(cfg.model.input_size)
            model.build((None, size, size, 3))
            model.optimizer.build(model.trainable_variables)
            if latest is not None:   # weights, optimizer (iterations, moments, EMA, scale)
                manager.restore(model, latest)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    throughput = Throughput(batch_size)
    watchers, validation = watching_callbacks(cfg, out, network, progress=verbose not in (0, "0"),
                                              first_step=start)
    saver = checkpoints.CheckpointSaver(
        manager, int(cfg.train.checkpoint_every), first_step=start, last_step=steps,
        first_example=start_example, batch_size=batch_size,
        info={"batch_size": batch_size, "seed": seed,
              "architecture": checkpoints.architecture(cfg)})
    cbs = [NonFiniteLossGuard(start), throughput, *watchers, *(callbacks or []),
           keras.callbacks.CSVLogger(str(out / LOG_FILE), append=True),
           saver]                                   # last: after the NaN guard
    history: dict[str, list[float]] = {}
    if start < steps:
        initial_epoch = start // spe
        epochs = initial_epoch + math.ceil((steps - start) / spe)  # the saver stops at `steps`
        with engine.scope(), checkpoints.stop_on_signals(saver):
            fit = model.fit(dataset, initial_epoch=initial_epoch, epochs=epochs,
                            steps_per_epoch=spe, callbacks=cbs, verbose=verbose,
                            shuffle=False)          # the dataset shuffles itself
        history = dict(fit.history)
        # fit ends with optimizer.finalize_variable_values: EMA weights are now in place.
    else:                                           # already at `steps`: EMA weights in
        model.optimizer.finalize_variable_values(model.trainable_weights)
    latest = saver.last_saved or latest
    if saver.stopped_early:
        name = signal.Signals(saver.stop_signal).name
        raise TrainingInterrupted(f"training stopped by {name} at step {saver.step}; "
                                  f"checkpoint {latest.path}; run again to resume")
    weights = out / WEIGHTS_FILE
    checkpoints.save_weights_atomically(network, weights)
    return TrainResult(model=model, history=history, initial_step=start, steps=saver.step,
                       weights_path=weights, config_path=out / CONFIG_FILE,
                       images_per_second=throughput.images_per_second,
                       checkpoint=latest.path if latest else None,
                       **validation_summary(validation))


def validation_summary(validation: Optional[ValidationAP]) -> dict[str, Any]:
    """``TrainResult``'s ``validation`` and ``best_weights`` from the run's ValidationAP."""
    if validation is None or not validation.history:
        return {}
    best = validation.best_path
    return {"validation": dict(validation.history[-1][1]),
            "best_weights": best if best is not None and best.is_file() else None}
