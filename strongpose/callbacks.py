"""Keras callbacks that watch a run: validation AP (best weights kept) and TensorBoard.

- :class:`ValidationAP`: every ``every`` training steps and at the last step, COCO AP of
  the network (its EMA weights when the optimizer keeps them: :func:`ema_weights` swaps
  them in and back) through a given ``evaluate`` function (``validation.split_ap`` in
  training); ``val_AP``, ``val_AP50``, ... go into the logs (the batch's, and every later
  epoch's, so ``CSVLogger`` and ``History`` see them); a better AP writes the evaluated
  weights to ``best.weights.h5`` and ``best.json`` (AP, step) in the output folder, each
  written with :func:`strongpose.files.atomic_write` (a kill never leaves half a file).
  A resumed run reads ``best.json`` and keeps the best so far.
- :class:`TensorBoardScalars`: every ``every`` steps, each number in the logs (loss
  terms, ``val_*``) and the learning rate as TensorBoard scalars.
- :class:`TensorBoardImages`: at each evaluation, predicted vs target maps (keypoint heat
  map: max over keypoint types; body map) and the decoded people drawn on a few
  validation images.

The first two count steps on the host (:class:`StepCountingCallback`, also the base of
training's NaN guard and checkpoint saver) and touch the model only at the steps where
they work: on JAX, a callback reading ``self.model`` copies the whole training state back
to the model at that step.

Summaries are written with TensorFlow's core ``tf.summary.write`` and the metadata of
TensorBoard's scalar and image plugins (:func:`write_scalar`, :func:`write_images`), so
they need TensorFlow (whatever the Keras backend) but not the ``tensorboard`` package,
which only the viewer needs (``pip install tensorboard; tensorboard --logdir RUN/tensorboard``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import keras
import numpy as np
from keras import ops

from strongpose.files import atomic_write

BEST_WEIGHTS_FILE = "best.weights.h5"
BEST_FILE = "best.json"
VAL_PREFIX = "val_"


# ------------------------------------------------------------------------ EMA
def ema_optimizer(optimizer: Optional[keras.optimizers.Optimizer]
                  ) -> Optional[keras.optimizers.Optimizer]:
    """The optimizer that holds EMA averages (the inner one of a ``LossScaleOptimizer``),
    or None when EMA is off or not built yet."""
    opt = getattr(optimizer, "inner_optimizer", optimizer)
    if opt is None or not getattr(opt, "use_ema", False):
        return None
    if not getattr(opt, "_model_variables_moving_average", None):
        return None
    return opt


@contextlib.contextmanager
def ema_weights(optimizer: Optional[keras.optimizers.Optimizer]) -> Iterator[bool]:
    """Within the block the optimizer's variables hold their EMA averages; afterwards (also
    on an exception) their training values again. Yields whether anything was swapped."""
    opt = ema_optimizer(optimizer)
    if opt is None:
        yield False
        return
    pairs = [(v, a) for v, a in zip(opt._trainable_variables, opt._model_variables_moving_average)
             if a is not None]
    saved = [ops.convert_to_numpy(v) for v, _ in pairs]
    try:
        for v, a in pairs:
            v.assign(a)
        yield True
    finally:
        for (v, _), value in zip(pairs, saved):
            v.assign(value)


# ------------------------------------------------------------------ files
def read_best(output_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """``best.json`` of a run folder (``{"AP", "step", ...}``), or None."""
    path = Path(output_dir) / BEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _step(model: keras.Model) -> int:
    return int(ops.convert_to_numpy(model.optimizer.iterations))


class StepCountingCallback(keras.callbacks.Callback):
    """A callback that counts training steps (batches) on the host: ``self.step`` is the
    step just done in ``on_train_batch_end`` (after :meth:`count`).

    It starts at ``first_step`` or, if None, at the optimizer's iteration count read once
    at the start of ``fit``. Counting here rather than reading ``optimizer.iterations``
    each step keeps the model untouched between the steps where there is work: on JAX
    every read of ``self.model`` in a callback copies every variable back to the model
    and the next step collects them again (``jax_state_sync``; some 40 ms per step for
    ResNet-152 with Adam and EMA).
    """

    def __init__(self, first_step: Optional[int] = None) -> None:
        super().__init__()
        self.first_step = first_step
        self.step = 0 if first_step is None else int(first_step)

    def on_train_begin(self, logs=None):
        self.step = _step(self.model) if self.first_step is None else int(self.first_step)

    def count(self) -> int:
        """One more step done; its number."""
        self.step += 1
        return self.step


# --------------------------------------------------------------- validation AP
class ValidationAP(StepCountingCallback):
    """COCO AP every ``every`` steps and at step ``total_steps``; best weights kept.

    Args:
        evaluate: ``network -> figures`` (``{"AP", "AP50", ...}``), e.g. a
            ``functools.partial`` of ``validation.split_ap``.
        network: the network to evaluate and save (``TrainingModel.network``).
        every: steps between evaluations (0: only at the end).
        total_steps: the run's last step.
        output_dir: where ``best.weights.h5`` and ``best.json`` go (None: not written).
        on_eval: called as ``on_eval(step, figures)`` after each evaluation, with the
            evaluated (EMA) weights still in place (e.g. :class:`TensorBoardImages`).
        first_step: steps done before this ``fit`` (a resumed run; default: the
            optimizer's iteration count); steps are counted as in
            :class:`StepCountingCallback`, the model is touched only when due.
    """

    def __init__(self, evaluate: Callable[[keras.Model], Mapping[str, float]],
                 network: keras.Model, every: int, total_steps: int,
                 output_dir: Optional[str | os.PathLike] = None,
                 on_eval: Sequence[Callable[[int, Mapping[str, float]], Any]] = (),
                 first_step: Optional[int] = None) -> None:
        super().__init__(first_step)
        self.evaluate_fn = evaluate
        self.network = network
        self.every = int(every)
        self.total_steps = int(total_steps)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.on_eval = list(on_eval)
        self.best_ap = -float("inf")
        self.best_step: Optional[int] = None
        self.latest: dict[str, float] = {}
        self.history: list[tuple[int, dict[str, float]]] = []

    @property
    def best_path(self) -> Optional[Path]:
        return None if self.output_dir is None else self.output_dir / BEST_WEIGHTS_FILE

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best = read_best(self.output_dir) if self.output_dir is not None else None
        if best is not None and (self.output_dir / BEST_WEIGHTS_FILE).is_file():
            self.best_ap, self.best_step = float(best["AP"]), int(best["step"])

    def due(self, step: int) -> bool:
        """Whether to evaluate after training step ``step``."""
        return step >= self.total_steps or (self.every > 0 and step % self.every == 0)

    def on_train_batch_end(self, batch, logs=None):
        step = self.count()
        if not self.due(step) or (self.history and self.history[-1][0] == step):
            return
        self.run(step)
        if logs is not None:
            logs.update(self.latest)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.latest)

    def run(self, step: int) -> dict[str, float]:
        """Evaluate now (EMA weights swapped in), log, keep the best; the figures."""
        with ema_weights(self.model.optimizer):
            figures = {k: float(v) for k, v in self.evaluate_fn(self.network).items()}
            if figures["AP"] > self.best_ap:
                self.best_ap, self.best_step = figures["AP"], step
                self._save_best(figures, step)
            for hook in self.on_eval:
                hook(step, figures)
        self.latest = {f"{VAL_PREFIX}{k}": v for k, v in figures.items()}
        self.history.append((step, figures))
        return figures

    def _save_best(self, figures: Mapping[str, float], step: int) -> None:
        if self.output_dir is None:
            return
        atomic_write(self.best_path, lambda p: self.network.save_weights(str(p)))
        atomic_write(self.output_dir / BEST_FILE,
                     lambda p: p.write_text(json.dumps({"step": step, **figures}, indent=1)))


# ----------------------------------------------------------------- TensorBoard
def _metadata(plugin: str, data_class: int) -> Any:
    from tensorflow.core.framework import summary_pb2
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin),
        data_class=data_class)


def write_scalar(name: str, value: float, step: int) -> None:
    """One TensorBoard scalar into the default summary writer (as ``tf.summary.scalar``)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                     metadata=_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def write_images(name: str, images: np.ndarray, step: int) -> None:
    """(B, H, W, 3) uint8 images as one TensorBoard image summary (as ``tf.summary.image``:
    the tensor ``[width, height, png, png, ...]``)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    images = np.asarray(images, np.uint8)
    pngs = [tf.io.encode_png(im) for im in images]
    tensor = tf.stack([tf.as_string(images.shape[2]), tf.as_string(images.shape[1]), *pngs])
    tf.summary.write(name, tensor, step=step,
                     metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE))


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer uses at its current iteration."""
    opt = getattr(optimizer, "inner_optimizer", optimizer)
    return float(ops.convert_to_numpy(opt.learning_rate))


class TensorBoardScalars(StepCountingCallback):
    """Every ``every`` steps: each scalar of the batch logs (``fit``'s running means of the
    epoch: every loss term; ``val_*`` once evaluated) and ``learning_rate``, at the
    training step (counted as in :class:`StepCountingCallback` from ``first_step``),
    under ``log_dir`` (``tf.summary``)."""

    def __init__(self, log_dir: str | os.PathLike, every: int,
                 first_step: Optional[int] = None) -> None:
        super().__init__(first_step)
        import tensorflow as tf
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.every = max(int(every), 1)

    def on_train_batch_end(self, batch, logs=None):
        step = self.count()
        if step % self.every:
            return
        self.write(step, {**(logs or {}),
                          "learning_rate": current_learning_rate(self.model.optimizer)})

    def write(self, step: int, values: Mapping[str, Any]) -> None:
        with self.writer.as_default():
            for name, value in values.items():
                try:
                    number = float(np.asarray(ops.convert_to_numpy(value)))
                except (TypeError, ValueError):
                    continue
                write_scalar(name, number, step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


def _gray(maps: np.ndarray, size: int) -> np.ndarray:
    """(B, h, w) in [0, 1] -> (B, size, size, 3) uint8, nearest-neighbour upsampled."""
    import cv2
    return np.stack([cv2.cvtColor(cv2.resize((np.clip(m, 0, 1) * 255).astype(np.uint8),
                                             (size, size), interpolation=cv2.INTER_NEAREST),
                                  cv2.COLOR_GRAY2RGB) for m in maps])


def draw_people(image: np.ndarray, people: Sequence[Any], edges: Sequence[tuple[int, int]],
                min_score: float = 0.1) -> np.ndarray:
    """Skeletons of ``people`` (keypoints in the image's pixels) on an RGB uint8 copy."""
    import cv2
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    for j, person in enumerate(people):
        colour = tuple(int(c) for c in np.array(
            cv2.applyColorMap(np.uint8([[(j * 47) % 256]]), cv2.COLORMAP_HSV))[0, 0])
        kps = np.asarray(person.keypoints)
        for a, b in edges:
            if min(kps[a, 2], kps[b, 2]) >= min_score:
                cv2.line(out, tuple(int(v) for v in kps[a, :2].round()),
                         tuple(int(v) for v in kps[b, :2].round()), colour, 1, cv2.LINE_AA)
    return out


class TensorBoardImages:
    """An ``on_eval`` hook of :class:`ValidationAP`: for a fixed batch of validation images
    with their target maps, one picture per image: input | target heat | predicted heat |
    target body | predicted body | decoded people, under ``log_dir`` as ``val_maps``."""

    def __init__(self, log_dir: str | os.PathLike, network: keras.Model, images: np.ndarray,
                 targets: Mapping[str, np.ndarray], decoder: Any) -> None:
        import tensorflow as tf
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.network, self.decoder = network, decoder
        self.images = np.asarray(images, np.float32)
        self.targets = {k: np.asarray(v) for k, v in targets.items()}

    def picture(self) -> np.ndarray:
        """(B, S, 6 S, 3) uint8 rows of the panels above."""
        outputs = self.network(self.images, training=False)
        outputs = {k: ops.convert_to_numpy(v) for k, v in outputs.items()}
        size = self.images.shape[1]
        sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
        panels = [self.images.clip(0, 255).astype(np.uint8),
                  _gray(self.targets["heatmap"].max(-1), size),
                  _gray(sig(outputs["heatmap_logits"]).max(-1), size),
                  _gray(self.targets["body"][..., 0], size),
                  _gray(sig(outputs["body_logits"])[..., 0], size)]
        people = self.decoder.decode_outputs(outputs)
        edges = self.decoder.skeleton.edges
        panels.append(np.stack([draw_people(im, p, edges) for im, p in zip(panels[0], people)]))
        return np.concatenate(panels, axis=2)

    def __call__(self, step: int, figures: Mapping[str, float]) -> None:
        with self.writer.as_default():
            write_images("val_maps", self.picture(), step)
        self.writer.flush()


# ------------------------------------------------------------------ wiring
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_IMAGES = 4               # validation images drawn at each evaluation


def watching_callbacks(cfg: Any, output_dir: str | os.PathLike, network: keras.Model,
                       *, progress: bool = False, first_step: Optional[int] = None
                       ) -> tuple[list[keras.callbacks.Callback], Optional[ValidationAP]]:
    """The callbacks that watch a training run of ``cfg`` (place them before ``CSVLogger``):
    :class:`ValidationAP` on the first ``train.eval_images`` images of ``data.val_split``
    (none when that is 0, or, with a warning, when the split's annotation file is absent)
    and, with ``train.tensorboard``, :class:`TensorBoardScalars` and
    :class:`TensorBoardImages` under ``output_dir/tensorboard``. ``first_step``: training
    steps done before (a resumed run; default: the optimizer's iteration count). Returns
    (callbacks, the ValidationAP or None)."""
    import functools
    import warnings

    from strongpose.data_generator import resolve_split
    from strongpose.validation import split_ap

    t = cfg.train
    out = Path(output_dir)
    board = out / TENSORBOARD_DIR
    tensorboard = bool(t.tensorboard) and _summaries_writable()
    cbs: list[keras.callbacks.Callback] = []
    val = None
    split = cfg.data.val_split
    _, ann, image_dir = resolve_split(cfg, split, None)
    if t.eval_images > 0 and not ann.is_file():
        warnings.warn(f"no validation: {ann} does not exist (data.val_split={split!r}; "
                      "train.eval_images=0 turns validation off)", stacklevel=2)
    elif t.eval_images > 0:
        hooks = [images_hook(cfg, board / "images", network, out / "data_cache", progress)] \
            if tensorboard else []
        val = ValidationAP(functools.partial(split_ap, cfg=cfg, split_or_annotation_file=split,
                                             limit=int(t.eval_images)),
                           network, int(t.eval_every), int(t.steps), out, on_eval=hooks,
                           first_step=first_step)
        cbs.append(val)
    if tensorboard:
        cbs.append(TensorBoardScalars(board / "train", int(t.log_every or 1), first_step))
    return cbs, val


def _summaries_writable() -> bool:
    """Whether TensorFlow (which writes the summaries) imports; if not (a JAX-only machine),
    warn that TensorBoard is off instead of failing the run."""
    import warnings
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        warnings.warn("TensorBoard off: writing its summaries needs TensorFlow, which is not "
                      "installed (train.tensorboard=false silences this)", stacklevel=3)
        return False
    return True


def images_hook(cfg: Any, log_dir: Path, network: keras.Model, cache_dir: Path,
                progress: bool = False, count: int = TENSORBOARD_IMAGES) -> TensorBoardImages:
    """:class:`TensorBoardImages` on the first ``count`` images of ``data.val_split`` (the
    evaluation crop, targets from the training encoder)."""
    from strongpose.data_generator import make_dataset
    from strongpose.post_proc import Decoder

    ds = make_dataset(cfg, cfg.data.val_split, None, cache_dir, training=False, augment=False,
                      batch_size=count, progress=progress)
    images, targets = next(iter(ds))
    stride = int(cfg.model.output_stride)               # the training network's
    return TensorBoardImages(log_dir, network, np.asarray(images),
                             {k: np.asarray(v) for k, v in targets.items()},
                             Decoder.from_config(cfg, stride=stride))
