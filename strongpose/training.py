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
  ``stop_training``) so ``fit`` never reaches ``on_epoch_end``, and no backup of that state
  is written.
- :func:`train`: output folder checked writable first; data (``make_dataset``, training
  mode), network, optimizer; ``fit`` with one epoch per ``train.checkpoint_every`` steps
  and ``keras.callbacks.BackupAndRestore(output_dir/backup)`` saving at every epoch end
  (weights, optimizer slots, iteration count and EMA weights in one file, plus the epoch),
  kept after training so a second run in the same folder with more ``train.steps``
  continues from the last saved step. At the end: ``model.weights.h5`` (the network's
  weights, loadable into ``build_model(cfg)``; the EMA weights when EMA is on: ``fit`` calls
  ``optimizer.finalize_variable_values`` at its end) and ``config.yaml`` (``cfg.to_dict()``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np
import yaml
from keras import ops

from strongpose import distribute
from strongpose.config import Config
from strongpose.losses import StrongPoseLoss

BACKUP_DIR = "backup"
WEIGHTS_FILE = "model.weights.h5"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.csv"
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

    def __init__(self, network: keras.Model, loss: StrongPoseLoss, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.pose_loss = loss
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
    the model's dtype policy is ``mixed_float16`` (``auto_scale_loss=True``)."""
    model.compile(optimizer=optimizer, jit_compile=False)


def step_count(model: keras.Model) -> int:
    """Optimizer steps taken so far (restored with the optimizer on resume)."""
    return int(ops.convert_to_numpy(model.optimizer.iterations))


# ------------------------------------------------------------------ callbacks
class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raise :class:`NonFiniteLossError` at the first step whose loss terms are not finite.

    Reads the running means of the epoch that ``fit`` passes on: a NaN/Inf step makes its
    mean NaN/Inf at that very step. Place it before ``BackupAndRestore``; raising ends
    ``fit`` before any epoch-end backup of the bad state.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = int(steps_per_epoch)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        bad = []
        for name, value in (logs or {}).items():
            try:
                v = float(np.asarray(ops.convert_to_numpy(value)))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                bad.append(f"{name}={v}")
        if bad:
            step = self._epoch * self.steps_per_epoch + int(batch) + 1
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


def steps_per_epoch_for(cfg: Config) -> int:
    """Steps between backups (one ``fit`` epoch): ``train.checkpoint_every`` (at most
    ``train.steps``, which must be a multiple of it)."""
    t = cfg.train
    every = int(t.checkpoint_every or t.log_every or t.steps)
    every = max(1, min(every, int(t.steps)))
    if t.steps % every:
        raise ValueError(f"train.steps ({t.steps}) must be a multiple of train.checkpoint_every "
                         f"({every}): a run resumes at a checkpoint, one per {every} steps")
    return every


def saved_step(output_dir: str | os.PathLike, steps_per_epoch: int) -> int:
    """The step a run in ``output_dir`` would resume at (0: none saved)."""
    meta = Path(output_dir) / BACKUP_DIR / "training_metadata.json"
    if not meta.is_file():
        return 0
    return int(json.loads(meta.read_text())["epoch"]) * steps_per_epoch


@dataclass
class TrainResult:
    """What :func:`train` did."""

    model: TrainingModel             # the network is model.network (EMA weights if EMA on)
    history: dict[str, list[float]]  # per epoch run now: every loss term
    initial_step: int                # 0, or the step resumed at
    steps: int                       # optimizer steps after training
    weights_path: Path
    config_path: Path
    images_per_second: Optional[float]


def train(cfg: Config, output_dir: Optional[str | os.PathLike] = None, *,
          split: Optional[str] = None, image_dir: Optional[str | os.PathLike] = None,
          dataset: Any = None, seed: int = 0, verbose: int | str = "auto",
          callbacks: Optional[list] = None,
          engine: Optional[distribute.Engine] = None) -> TrainResult:
    """Train ``cfg``'s network on ``engine``; resume if ``output_dir`` holds a backup.

    Args:
        cfg: the config (``train.*`` for the optimisation, ``data.*`` for the data).
        output_dir: default ``train.output_dir``; gets ``config.yaml``, ``log.csv``,
            ``backup/`` (resume state, kept), ``data_cache/`` and ``model.weights.h5``.
        split: a split name of ``cfg.data`` or a keypoints JSON path (default
            ``data.train_split``); ``image_dir`` its images (default for a split:
            ``data.coco_root/<split>``).
        dataset: batches ``(images, targets)`` to use instead (repeating; tests, custom data):
            a ``tf.data.Dataset`` of global batches, or e.g. a ``memory_data.NpzBatches``
            (no TensorFlow needed; in a multi-process JAX run, this process's share).
        seed: weights initialisation and data stream; a resumed run draws its data with
            ``seed + resumed epoch`` (no replay of the batches already seen).
        verbose: ``fit``'s (progress bar: "auto"/1, 2 one line per epoch, 0 silent).
        callbacks: more Keras callbacks.
        engine: a :class:`strongpose.distribute.Engine` (default ``select_engine("auto")``);
            the network is built, compiled and fitted in its scope. Processes other than
            the chief write their files under ``output_dir/worker<id>``.
    Raises:
        OSError: ``output_dir`` not writable (before anything is built).
        NonFiniteLossError: a loss term became NaN/Inf (message: step and terms).
    """
    engine = engine or distribute.select_engine("auto")
    engine.per_replica_batch(cfg.train.batch_size)  # DistributeError if not divisible
    out = Path(output_dir if output_dir is not None else cfg.train.output_dir)
    out = check_writable(out if engine.is_chief else out / f"worker{engine.process_id}")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, output_dir=str(out)))
    spe = steps_per_epoch_for(cfg)
    epochs = int(cfg.train.steps) // spe
    resume_epoch = saved_step(out, spe) // spe

    from strongpose.model import build_model

    keras.utils.set_random_seed(seed)
    if dataset is None:
        from strongpose.data_generator import make_dataset  # TensorFlow
        dataset = make_dataset(cfg, split or cfg.data.train_split, image_dir,
                               out / "data_cache", training=True, seed=seed + resume_epoch,
                               progress=verbose not in (0, "0"))
    dataset = engine.prepare_dataset(dataset)

    previous_policy = keras.mixed_precision.global_policy()
    if cfg.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with engine.scope():
            network = build_model(cfg, training_outputs=True)
            if cfg.train.sync_batchnorm:
                distribute.synchronize_batchnorm(network, engine)
            model = TrainingModel(network, StrongPoseLoss.from_config(cfg),
                                  name="strongpose_training")
            compile_model(model, build_optimizer(cfg))
            size = int(cfg.model.input_size)
            model.build((None, size, size, 3))  # BackupAndRestore needs a built model
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    throughput = Throughput(cfg.train.batch_size)
    cbs = [NonFiniteLossGuard(spe), throughput, *(callbacks or []),
           keras.callbacks.CSVLogger(str(out / LOG_FILE), append=True),
           keras.callbacks.BackupAndRestore(str(out / BACKUP_DIR), save_freq="epoch",
                                            delete_checkpoint=False)]
    with engine.scope():
        history = model.fit(dataset, epochs=epochs, steps_per_epoch=spe, callbacks=cbs,
                            verbose=verbose, shuffle=False)  # the dataset shuffles itself
    # fit ends with optimizer.finalize_variable_values: EMA weights are in place if EMA is on.
    weights = out / WEIGHTS_FILE
    network.save_weights(str(weights))
    return TrainResult(model=model, history=dict(history.history),
                       initial_step=resume_epoch * spe, steps=step_count(model),
                       weights_path=weights, config_path=out / CONFIG_FILE,
                       images_per_second=throughput.images_per_second)
