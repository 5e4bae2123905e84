"""strongpose.checkpoints, make_dataset(start=...) and resuming train().

Default run: the data stream resumed at an example equals the uninterrupted stream; a
checkpoint restores every variable (weights, iteration count, Adam moments, EMA weights,
loss scale); the saver writes every N steps, at the last step and on SIGTERM, keeping K;
a writer SIGKILLed during its writes always leaves a latest checkpoint that loads and holds
the step its manifest names; a checkpoint of another network gives one clear error.
Slow: train() stopped (SIGTERM, or a kill after a checkpoint) and run again reproduces the
uninterrupted run's per-step losses and final weights.
"""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from strongpose import checkpoints, training  # noqa: E402
from strongpose.checkpoints import CheckpointError, CheckpointManager, CheckpointSaver  # noqa: E402
from strongpose.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from strongpose.synthetic import write_dataset
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, split="train", images=6, size=65, seed=0, empty_rate=0.35, people=(1, 2))
    return root


def config(root, *overrides):
    return load_config("tiny", [f"data.coco_root={root}", "data.train_split=train",
                                "model.input_size=65", "train.batch_size=2", *overrides])


def toy_model(width=8, seed=0, built=False):
    """A small compiled Keras model (AdamW with EMA) for the checkpoint mechanics; with
    ``built`` its optimizer's variables exist (as after a first step)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(0.01, use_ema=True, ema_momentum=0.5),
                  loss="mse")
    if built:
        model.optimizer.build(model.trainable_variables)
    return model


def toy_data(batch=2):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)


def all_values(model):
    return ([np.asarray(v) for v in model.weights]
            + [np.asarray(v) for v in model.optimizer.variables])


def fit_toy(model, saver, steps_per_epoch, epochs, *callbacks):
    """``fit`` on :func:`toy_data` with ``callbacks`` and then ``saver`` (last, as in train)."""
    model.fit(toy_data(), epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
              shuffle=False, callbacks=[*callbacks, saver])


@pytest.fixture
def saver_in(tmp_path):
    """``saver_in(name, keep, every, last_step)``: a CheckpointManager in ``tmp_path/name``
    keeping ``keep``, and a CheckpointSaver of it from step 0 (batch size 2)."""
    def make(name, keep=2, every=3, last_step=8):
        manager = CheckpointManager(tmp_path / name, keep=keep)
        saver = CheckpointSaver(manager, every, first_step=0, last_step=last_step,
                                first_example=0, batch_size=2)
        return manager, saver
    return make


class SigtermAtStep(keras.callbacks.Callback):
    """Sends this process SIGTERM at the end of the ``step``-th batch of its fit."""

    def __init__(self, step):
        super().__init__()
        self.step, self.n = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.n += 1
        if self.n == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------------------------------ data position
def test_make_dataset_start_continues_the_stream(data_root, tmp_path):
    """Starting at example k gives examples k, k+1, ... of the full stream, across epochs
    and with the empty-image filter on (6 images, some without people)."""
    from strongpose.data_generator import make_dataset
    cfg = config(data_root)
    kw = dict(cache_dir=tmp_path / "cache", batch_size=1, with_targets=False, progress=False,
              empty_image_rate=0.5, seed=3)
    full = [x.numpy() for x, _ in make_dataset(cfg, "train", **kw).take(16)]
    assert not all(np.array_equal(full[0], f) for f in full[1:])
    for start in (5, 11):
        resumed = [x.numpy() for x, _ in make_dataset(cfg, "train", start=start, **kw).take(3)]
        for i, image in enumerate(resumed):
            np.testing.assert_array_equal(image, full[start + i], err_msg=f"start {start}, +{i}")
    t = time.perf_counter()
    make_dataset(cfg, "train", start=10**4, **kw)      # counted per epoch, nothing read
    assert time.perf_counter() - t < 10


# ------------------------------------------------------------------ state restored
def test_restore_brings_back_iterations_moments_ema_and_loss_scale(tmp_path, mixed_float16):
    """Every variable of the training model comes back: network weights, the optimizer's
    iteration count, Adam moments, EMA weights, and LossScaleOptimizer's dynamic scale."""
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model
    cfg = load_config("tiny", ["model.input_size=65", "train.polyak_decay=0.9",
                               "train.mixed_precision=true"])
    model = training.TrainingModel(build_model(cfg, training_outputs=True),
                                   StrongPoseLoss.from_config(cfg))
    training.compile_model(model, training.build_optimizer(cfg))
    model.build((None, 65, 65, 3))
    model.optimizer.build(model.trainable_variables)
    names = [v.path for v in model.optimizer.variables]
    assert any(n.endswith("iteration") for n in names)
    assert any("average" in n for n in names)                  # EMA weights
    assert any("momentum" in n for n in names) and any("velocity" in n for n in names)
    assert any("dynamic_scale" in n for n in names)            # mixed precision

    rng = np.random.default_rng(1)

    def scramble():          # a state no initialisation gives, different each time
        for v in list(model.weights) + list(model.optimizer.variables):
            v.assign(rng.uniform(1, 100, v.shape).astype(v.dtype) if "float" in str(v.dtype)
                     else rng.integers(1, 10**6, v.shape).astype(v.dtype))

    scramble()
    saved_values = all_values(model)
    manager = CheckpointManager(tmp_path / "ckpt")
    saved = manager.save(model, 7, examples=14, info={"architecture": checkpoints.architecture(cfg)})
    assert saved.step == 7 and saved.examples == 14 and manager.latest().step == 7
    scramble()
    assert not any(np.array_equal(x, y) for x, y in zip(saved_values, all_values(model)))
    manager.restore(model, manager.latest())
    restored = all_values(model)
    for name, x, y in zip([v.path for v in model.weights] + names, saved_values, restored):
        np.testing.assert_array_equal(x, y, err_msg=name)


# ------------------------------------------------------------------ saver
def test_saver_every_n_steps_at_the_end_and_on_sigterm(saver_in):
    """Checkpoints at 3, 6 and at the last step (8), the newest 2 kept; a SIGTERM during fit
    checkpoints the step it ends and stops there; the handlers are put back after."""
    manager, saver = saver_in("a", keep=2)
    fit_toy(toy_model(), saver, 3, 4)
    assert saver.step == 8 and not saver.stopped_early
    assert [c.step for c in manager.checkpoints()] == [6, 8]
    assert manager.latest().examples == 16 and manager.latest().manifest["reason"] == "end"

    manager, saver = saver_in("b", keep=5, last_step=20)
    before = signal.getsignal(signal.SIGTERM)
    with checkpoints.stop_on_signals(saver):
        fit_toy(toy_model(), saver, 2, 10, SigtermAtStep(4))
    assert signal.getsignal(signal.SIGTERM) is before
    assert saver.stopped_early and saver.step == 4
    assert [c.step for c in manager.checkpoints()] == [3, 4]
    assert manager.latest().manifest["reason"] == "SIGTERM"


def test_disk_full_during_a_checkpoint_stops_and_keeps_the_previous(saver_in, monkeypatch):
    """The write of step 6's checkpoint fails with ENOSPC (the state file half written):
    fit stops at step 6 with one line naming the step, the checkpoint and the previous one
    (step 3), which stays complete and loads; nothing partial is left behind."""
    manager, saver = saver_in("full", keep=2)
    fsync = checkpoints._fsync_file

    def full_at_step_6(path):
        if "step-000000006" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        fsync(path)

    monkeypatch.setattr(checkpoints, "_fsync_file", full_at_step_6)
    with pytest.raises(OSError) as err:
        fit_toy(toy_model(), saver, 3, 4)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("training stopped at step 6: cannot write checkpoint ")
    assert "step-000000006: No space left on device; the latest complete checkpoint is " in message
    assert message.endswith("step-000000003 (step 3)")
    assert saver.last_saved.step == 3 and saver.step == 6
    assert [c.step for c in manager.checkpoints()] == [3]
    assert [p.name for p in manager.directory.iterdir()] == ["step-000000003"]
    fresh = toy_model(seed=1, built=True)
    manager.restore(fresh, manager.latest())
    assert int(fresh.optimizer.iterations) == 3


# ------------------------------------------------------------------ kill during a write
WRITER = r"""
import sys, time
import numpy as np
import keras
from strongpose import checkpoints
fsync = checkpoints._fsync_file
def slowed_fsync(path):            # the state file written, its manifest not yet
    print("inside", flush=True)
    time.sleep(0.3)
    fsync(path)
checkpoints._fsync_file = slowed_fsync
model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(2048), keras.layers.Dense(1024)])
manager = checkpoints.CheckpointManager(sys.argv[1], keep=2)
latest = manager.latest()
step = latest.step if latest else 0
while True:
    step += 1
    for v in model.weights:              # the content names its step
        v.assign(np.full(v.shape, step, "float32"))
    print("writing", step, flush=True)
    manager.save(model, step, examples=step)
"""


def test_sigkill_during_writes_leaves_a_loadable_latest(tmp_path):
    """A writer of checkpoints (8 MB each, in a loop, slowed inside each write) is
    SIGKILLed three times: once at a random moment, twice at a random moment inside a
    write. Each time the latest complete checkpoint loads, its weights hold the step its
    manifest names, at most 2 (+ 1 not yet pruned) are kept, and the next writer goes on
    from it."""
    folder = tmp_path / "ckpt"
    model = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(2048), keras.layers.Dense(1024)])
    env = {**os.environ, "KERAS_BACKEND": "numpy", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    rnd = random.Random(0)
    last = 0
    for kill in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            writes = 0
            for line in proc.stdout:
                writes += line.startswith("writing")
                if writes == 3 and (kill == 0 or line.startswith("inside")):
                    break                     # two writes complete, the third under way
            time.sleep(rnd.uniform(0.0, 0.5 if kill == 0 else 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        partial = [p for p in folder.iterdir() if p.name.startswith(checkpoints.TMP_PREFIX)]
        if kill > 0:
            assert partial, "the kill did not land inside a write"
        manager = CheckpointManager(folder, keep=2)
        found = manager.checkpoints()
        assert 1 <= len(found) <= 3, [c.path.name for c in found]
        latest = found[-1]
        assert latest.step >= last + 2, (kill, latest.step, last)
        manager.restore(model, latest)
        for v in model.weights:
            np.testing.assert_array_equal(np.asarray(v), latest.step)
        last = latest.step


# ------------------------------------------------------------------ incompatible
def test_checkpoint_of_another_network_is_a_clear_error(data_root, tmp_path, monkeypatch):
    """Another backbone: one line naming the key, before anything is built; other variables
    (caught by the shapes): one line; a damaged file: one line, not an h5py traceback."""
    out = tmp_path / "run"
    manager = CheckpointManager(out / checkpoints.CHECKPOINT_DIR)
    tiny = config(data_root)
    model = toy_model(built=True)
    manager.save(model, 3, examples=6, info={"architecture": checkpoints.architecture(tiny)})

    import strongpose.model
    monkeypatch.setattr(strongpose.model, "build_model",
                        lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(CheckpointError, match=r"another network \(model.backbone: 'tiny' there, "
                                              r"'resnet50' here\)"):
        training.train(config(data_root, "model.backbone=resnet50"), out, verbose=0)

    wider = toy_model(width=16, built=True)
    with pytest.raises(CheckpointError, match="does not fit this model: its network weights"):
        manager.restore(wider, manager.latest())

    state = manager.latest().state_file
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] + b"\0" * (len(data) - len(data) // 2))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        manager.restore(toy_model(), manager.latest())
    state.write_bytes(data[:100])            # size no longer the manifest's: not complete
    assert manager.latest() is None


# ------------------------------------------------------------------ train() resumes
class StepLosses(keras.callbacks.Callback):
    """Each step's total loss, from fit's running means of the epoch."""

    def __init__(self):
        super().__init__()
        self.losses, self._k, self._mean = [], 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._k, self._mean = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        self._k += 1
        mean = float(logs["total"])
        self.losses.append(mean * self._k - self._mean * (self._k - 1))
        self._mean = mean


@pytest.mark.slow
def test_train_resumed_reproduces_the_uninterrupted_run(data_root, tmp_path):
    """6 steps in one go, against: SIGTERM at step 4 then a second train() in the folder
    (steps 5-6); and a run killed after its step-2 checkpoint (later ones removed) run
    again (steps 3-6). Same per-step losses, same final weights and optimizer state."""
    cfg = config(data_root, "train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3",
                 "train.polyak_decay=0.9", "train.warmup_steps=2", "train.learning_rate=0.003")
    ref_losses = StepLosses()
    ref = training.train(cfg, tmp_path / "ref", verbose=0, callbacks=[ref_losses])
    assert ref.steps == 6 and len(ref_losses.losses) == 6
    assert [c.step for c in CheckpointManager(tmp_path / "ref" / "checkpoints").checkpoints()] == [2, 4, 6]

    def same_end(result):
        for x, y in zip(all_values(ref.model), all_values(result.model)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)

    out = tmp_path / "stopped"
    with pytest.raises(training.TrainingInterrupted, match="SIGTERM at step 4"):
        training.train(cfg, out, verbose=0, callbacks=[SigtermAtStep(4)])
    assert CheckpointManager(out / "checkpoints").latest().step == 4
    assert not (out / "model.weights.h5").exists()
    losses = StepLosses()
    resumed = training.train(cfg, out, verbose=0, callbacks=[losses])
    assert resumed.initial_step == 4 and resumed.steps == 6
    np.testing.assert_allclose(losses.losses, ref_losses.losses[4:], rtol=1e-4)
    same_end(resumed)

    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "ref", killed)
    for step in (4, 6):
        shutil.rmtree(killed / "checkpoints" / f"step-{step:09d}")
    (killed / "model.weights.h5").unlink()
    losses = StepLosses()
    resumed = training.train(cfg, killed, verbose=0, callbacks=[losses])
    assert resumed.initial_step == 2
    np.testing.assert_allclose(losses.losses, ref_losses.losses[2:], rtol=1e-4)
    same_end(resumed)
    manifest = json.loads((killed / "checkpoints" / "step-000000006" / "checkpoint.json").read_text())
    assert manifest["step"] == 6 and manifest["examples"] == 12
