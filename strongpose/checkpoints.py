"""Training checkpoints: written atomically every N steps and at exit, found and restored.

    manager = CheckpointManager(output_dir / "checkpoints", keep=2)
    latest = manager.latest()                 # None, or the newest complete checkpoint
    manager.restore(model, latest)            # weights + optimizer (+ EMA, loss scale)
    saver = CheckpointSaver(manager, every=1000, first_step=latest.step, last_step=steps, ...)
    with stop_on_signals(saver):              # SIGINT/SIGTERM: checkpoint, then stop
        model.fit(..., callbacks=[..., saver])

Layout of ``output_dir/checkpoints/``::

    step-000001000/
        state.weights.h5     TrainingModel.save_weights: the network's weights (raw, not
                             EMA), and the optimizer's variables: iteration count, Adam
                             moments, EMA weights (use_ema), learning rate; under mixed
                             precision the LossScaleOptimizer's dynamic scale and counter
        checkpoint.json      the manifest, written last: step, examples (the data stream
                             position to resume at), batch size, seed, the state file's size,
                             the architecture keys and a signature of the variables' shapes
    step-000002000/ ...      the newest ``keep`` are kept
    .tmp-step-000003000-<pid>/   a write in progress (or killed): never read, removed later

A checkpoint is written into a ``.tmp-*`` folder, its files fsync'ed, then the folder is
renamed to ``step-<step>`` (atomic on POSIX) and the parent folder fsync'ed; older ones are
deleted only after that. So a kill at any moment leaves every ``step-*`` folder complete,
and :meth:`CheckpointManager.latest` (which also checks the manifest and the file size)
finds the newest one.

The step is counted here (batches trained), not read from ``optimizer.iterations``: under
mixed precision a step whose gradients overflow is skipped by the optimizer but still
consumes its batch. Resuming at example ``examples`` of ``make_dataset``'s deterministic
stream (``make_dataset(..., start=examples)``) gives the same batches as a run that never
stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import keras

from strongpose.callbacks import StepCountingCallback
from strongpose.files import TMP_PREFIX, atomic_write
from strongpose.files import fsync_dir as _fsync_dir
from strongpose.files import fsync_file as _fsync_file

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.weights.h5"
MANIFEST_FILE = "checkpoint.json"
FORMAT = 1
PREFIX = "step-"
# model.* keys that change the variables (a checkpoint of another value cannot be loaded).
ARCHITECTURE_KEYS = ("backbone", "intermediate_supervision", "head_channels", "freeze_batchnorm")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or written for another network."""


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint on disk."""

    path: Path                  # the step-<step> folder
    step: int                   # training steps done (batches trained)
    examples: int               # examples of the data stream consumed
    manifest: dict[str, Any]

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE


# ------------------------------------------------------------------ signatures
def architecture(cfg: Any) -> dict[str, Any]:
    """What a checkpoint must match: the model keys that shape the variables, and whether
    the optimizer has EMA and loss-scale variables."""
    model = cfg.model
    keys = {f"model.{k}": getattr(model, k) for k in ARCHITECTURE_KEYS}
    keys["train.polyak_decay > 0"] = bool(cfg.train.polyak_decay > 0)
    keys["train.mixed_precision"] = bool(cfg.train.mixed_precision)
    if cfg.train.mixed_precision and cfg.train.mixed_dtype != "float16":   # no loss scale
        keys["train.mixed_dtype"] = cfg.train.mixed_dtype
    return keys


def variable_signature(model: keras.Model) -> dict[str, Any]:
    """Counts and a hash of the shapes and dtypes, in order, of the model's weights and its
    optimizer's variables (names are left out: Keras numbers layer names per process)."""
    def digest(variables) -> str:
        h = hashlib.sha1()
        for v in variables:
            h.update(f"{tuple(v.shape)}:{v.dtype};".encode())
        return h.hexdigest()[:16]
    opt = getattr(model, "optimizer", None)
    opt_vars = list(opt.variables) if opt is not None else []
    return {"weights": len(model.weights), "weights_sha1": digest(model.weights),
            "optimizer": len(opt_vars), "optimizer_sha1": digest(opt_vars)}


# ------------------------------------------------------------------ disk space
FLOAT_BYTES = 4          # every variable is float32 (also under mixed precision)
ADAM_SLOTS = 2           # momentum and velocity per variable
H5_OVERHEAD = 1 << 20    # per weights file: HDF5 headers (a few KB per variable), rounded up


def estimated_parameters(cfg: Any) -> int:
    """The network's variable count (batch-norm statistics included) for ``cfg``, counted
    from the backbone's spec and the heads without building anything."""
    from strongpose import maps
    from strongpose.backbones import SPECS
    from strongpose.resnet_v2 import MID_STACK

    m, skeleton = cfg.model, cfg.skeleton
    spec = SPECS[m.backbone]
    width = spec.root_filters
    count = 7 * 7 * 3 * width + width                      # conv1 (with bias)
    for filters, units in spec.stacks:
        for unit in range(units):
            count += 4 * width                             # preact batch norm
            if unit == 0:                                  # projection shortcut
                count += width * 4 * filters + 4 * filters
            count += width * filters + 4 * filters         # 1x1 (no bias) + batch norm
            count += 9 * filters * filters + 4 * filters   # 3x3 (no bias) + batch norm
            count += filters * 4 * filters + 4 * filters   # 1x1 with bias
            width = 4 * filters
    count += 4 * width                                     # post batch norm

    def heads(features: int, specs: Any) -> int:
        n, hc = 0, int(m.head_channels)
        if hc > 0:                                         # the shared 3x3 conv
            n, features = 9 * features * hc + hc, hc
        return n + sum(features * s.channels(skeleton) + s.channels(skeleton) for s in specs)

    count += heads(width, maps.MAPS)
    if m.intermediate_supervision:
        count += heads(4 * spec.stacks[MID_STACK][0], [maps.SPECS[k] for k in maps.INTERMEDIATE])
    return count


def checkpoint_bytes(cfg: Any) -> int:
    """About the size of one checkpoint of ``cfg``: the weights, Adam's two slots and (with
    ``train.polyak_decay > 0``) the EMA weights, float32."""
    copies = 1 + ADAM_SLOTS + (1 if cfg.train.polyak_decay > 0 else 0)
    return copies * FLOAT_BYTES * estimated_parameters(cfg) + H5_OVERHEAD


def weights_bytes(cfg: Any) -> int:
    """About the size of a weights file of ``cfg``'s network (``model.weights.h5``)."""
    return FLOAT_BYTES * estimated_parameters(cfg) + H5_OVERHEAD


# ------------------------------------------------------------------ files
def _step_of(name: str) -> Optional[int]:
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX):]
    return int(digits) if digits.isdigit() else None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint in folder ``path``; CheckpointError if it is not a complete one."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        step, examples = int(manifest["step"]), int(manifest["examples"])
        size = (path / STATE_FILE).stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a complete checkpoint ({type(exc).__name__}: {exc})") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {manifest.get('format')!r}, "
                              f"this version reads {FORMAT}")
    if size != manifest.get("state_bytes"):
        raise CheckpointError(f"{path}: {STATE_FILE} has {size} bytes, the manifest says "
                              f"{manifest.get('state_bytes')}")
    return Checkpoint(path=path, step=step, examples=examples, manifest=manifest)


class CheckpointManager:
    """The checkpoints of one run folder: list, write (atomically), prune, restore."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2) -> None:
        if int(keep) < 1:
            raise ValueError(f"keep must be >= 1 (the latest checkpoint), got {keep}")
        self.directory = Path(directory)
        self.keep = int(keep)

    @classmethod
    def from_config(cls, cfg: Any, output_dir: str | os.PathLike) -> "CheckpointManager":
        """``output_dir/checkpoints``, keeping ``train.keep_checkpoints``."""
        return cls(Path(output_dir) / CHECKPOINT_DIR, keep=int(cfg.train.keep_checkpoints))

    # -------------------------------------------------------------- reading
    def checkpoints(self) -> list[Checkpoint]:
        """The complete checkpoints, oldest first (partial or damaged folders left out)."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            if _step_of(entry.name) is None or not entry.is_dir():
                continue
            try:
                found.append(read_checkpoint(entry))
            except CheckpointError:
                continue
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Optional[Checkpoint]:
        """The newest complete checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    # -------------------------------------------------------------- writing
    def save(self, model: keras.Model, step: int, *, examples: int,
             info: Optional[Mapping[str, Any]] = None) -> Checkpoint:
        """Write ``model``'s weights and optimizer state as checkpoint ``step`` (atomically:
        temporary folder, fsync, rename), then delete all but the newest ``keep``.

        ``info``: more manifest entries (e.g. batch size, seed, architecture, reason).
        """
        name = f"{PREFIX}{int(step):09d}"
        tmp = self.directory / f"{TMP_PREFIX}{name}-{os.getpid()}"
        final = self.directory / name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            self._write(tmp, model, step, examples, info)
        except BaseException as exc:  # e.g. disk full: no half-written checkpoint stays
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(exc, OSError):
                raise
            latest = self.latest()
            kept = (f"the latest complete checkpoint is {latest.path} (step {latest.step})"
                    if latest is not None else "there is no complete checkpoint")
            raise OSError(f"cannot write checkpoint {final}: {exc.strerror or exc}; "
                          f"{kept}") from exc
        if final.exists():   # the same step again (e.g. after a resume): swap it out
            old = self.directory / f"{TMP_PREFIX}old-{name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(self.directory)
        self.prune()
        return read_checkpoint(final)

    @staticmethod
    def _write(folder: Path, model: keras.Model, step: int, examples: int,
               info: Optional[Mapping[str, Any]]) -> None:
        """The state file, then the manifest naming it, each fsync'ed, then the folder."""
        state = folder / STATE_FILE
        model.save_weights(str(state))
        _fsync_file(state)
        manifest = {"format": FORMAT, "step": int(step), "examples": int(examples),
                    "state_bytes": state.stat().st_size,
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "signature": variable_signature(model), **dict(info or {})}
        with open(folder / MANIFEST_FILE, "w") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(folder)

    def prune(self) -> None:
        """Delete all but the newest ``keep`` complete checkpoints, and the temporary folders
        of writes that no longer run (another process's, or this one's own leftovers)."""
        for old in self.checkpoints()[:-self.keep]:
            shutil.rmtree(old.path, ignore_errors=True)
        self.remove_partial(other_processes_only=True)

    def remove_partial(self, other_processes_only: bool = False) -> None:
        """Remove ``.tmp-*`` folders left by killed writes (of processes no longer alive
        when ``other_processes_only``)."""
        if not self.directory.is_dir():
            return
        for entry in self.directory.iterdir():
            if not entry.name.startswith(TMP_PREFIX):
                continue
            pid = entry.name.rsplit("-", 1)[-1]
            if other_processes_only and pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(entry, ignore_errors=True)

    # -------------------------------------------------------------- restoring
    def check_compatible(self, checkpoint: Checkpoint, cfg: Any) -> None:
        """CheckpointError naming the keys where ``cfg`` differs from the checkpoint's
        architecture (before anything is built)."""
        saved = checkpoint.manifest.get("architecture")
        if not isinstance(saved, dict):
            return
        now = architecture(cfg)
        diff = [f"{k}: {saved.get(k)!r} there, {v!r} here" for k, v in now.items()
                if k in saved and saved[k] != v]
        if diff:
            raise CheckpointError(
                f"checkpoint {checkpoint.path} was written for another network "
                f"({'; '.join(diff)}): train in another output folder, or with its config")

    def restore(self, model: keras.Model, checkpoint: Checkpoint) -> None:
        """Load ``checkpoint`` into ``model`` (built; its optimizer is built here if needed):
        weights, optimizer variables (iterations, moments, EMA), loss scale.

        Raises:
            CheckpointError: another network or optimizer (variable counts or shapes differ),
                or a file that cannot be read; the message names the checkpoint.
        """
        opt = getattr(model, "optimizer", None)
        if opt is not None and not opt.built:
            opt.build(model.trainable_variables)
        saved = checkpoint.manifest.get("signature", {})
        now = variable_signature(model)
        for part, what in (("weights", "network weights"), ("optimizer", "optimizer variables")):
            if saved.get(part) is None:
                continue
            if (saved[part], saved.get(f"{part}_sha1")) != (now[part], now[f"{part}_sha1"]):
                raise CheckpointError(
                    f"checkpoint {checkpoint.path} does not fit this model: its {what} "
                    f"({saved[part]} variables) differ from this model's ({now[part]}) in "
                    "number or shapes; train in another output folder, or with its config")
        try:
            model.load_weights(str(checkpoint.state_file))
        except Exception as exc:  # h5py/Keras raise many types for a bad file
            raise CheckpointError(f"checkpoint {checkpoint.path} cannot be loaded: "
                                  f"{type(exc).__name__}: {exc}") from exc


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ during fit
class CheckpointSaver(StepCountingCallback):
    """Counts steps (from ``first_step``, on the host); writes a checkpoint every ``every`` steps, at ``last_step`` and after
    a stop request (:meth:`request_stop`, e.g. from :func:`stop_on_signals`), then stops
    ``fit`` at ``last_step`` or at the request.

    Put it last among the callbacks: one that raises at a batch's end (the NaN guard)
    then prevents the checkpoint of that state. A checkpoint that cannot be written (e.g.
    disk full) raises OSError, naming the step and the previous checkpoint, which stays
    complete and loadable (nothing is pruned before a write succeeds). The checkpoint at
    ``last_step`` is written at that batch's end, before ``fit`` swaps the EMA weights
    in, so it holds the raw weights a longer run would continue from.
    """

    def __init__(self, manager: CheckpointManager, every: int, *, first_step: int,
                 last_step: int, first_example: int, batch_size: int,
                 info: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(int(first_step))
        self.manager = manager
        self.every = int(every)
        self.last_step = int(last_step)
        self.examples = int(first_example)
        self.batch_size = int(batch_size)
        self.info = dict(info or {})
        self.stop_signal: Optional[int] = None
        self.last_saved: Optional[Checkpoint] = None

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Checkpoint and stop at the end of the step that runs now."""
        self.stop_signal = int(signum)

    @property
    def stopped_early(self) -> bool:
        """True when a stop request ended training before ``last_step``."""
        return self.stop_signal is not None and self.step < self.last_step

    def on_train_batch_end(self, batch, logs=None):
        self.count()
        self.examples += self.batch_size
        done = self.step >= self.last_step
        stop = done or self.stop_signal is not None
        if stop or (self.every > 0 and self.step % self.every == 0):
            reason = ("end" if done else signal.Signals(self.stop_signal).name
                      if self.stop_signal is not None else "periodic")
            try:
                self.last_saved = self.manager.save(self.model, self.step, examples=self.examples,
                                                    info={**self.info, "reason": reason})
            except OSError as exc:    # e.g. disk full: stop; the previous checkpoint stays
                self.model.stop_training = True
                raise OSError(f"training stopped at step {self.step}: {exc}") from exc
        if stop:
            self.model.stop_training = True


@contextlib.contextmanager
def stop_on_signals(saver: CheckpointSaver,
                    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While inside: the first SIGINT/SIGTERM asks ``saver`` to checkpoint and stop after
    the running step; a second one acts as usual (KeyboardInterrupt, termination).
    Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        saver.request_stop(signum)
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def save_weights_atomically(model: keras.Model, path: str | os.PathLike) -> Path:
    """``model.save_weights(path)`` through :func:`strongpose.files.atomic_write`: a kill
    or a failed write (e.g. disk full) leaves the previous file or the new one, never half
    of one."""
    return atomic_write(path, lambda tmp: model.save_weights(str(tmp)))


def skip_batches(dataset: Any, batches: int) -> Any:
    """A dataset given to ``train`` (not ``make_dataset``'s) resumed: its first ``batches``
    dropped (``skip``; its pipeline runs over them)."""
    if batches <= 0:
        return dataset
    if not hasattr(dataset, "skip"):
        raise CheckpointError(f"cannot resume {type(dataset).__name__} at batch {batches}: "
                              "it has no skip(); pass a tf.data.Dataset")
    return dataset.skip(batches)
