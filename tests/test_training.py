"""strongpose.training and train.py: a few steps of the tiny network on drawn images.

Every loss term is reported and finite; two images are overfitted; a second run in the same
folder resumes at the saved step with the optimizer state; a NaN stops training at once
naming the step and the term; an unwritable output folder, or one whose disk has too little
free space, fails before anything is built.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from strongpose.config import load_config  # noqa: E402
from strongpose import training  # noqa: E402
from strongpose.training import NonFiniteLossError, train  # noqa: E402

TERMS = ["heatmap", "body", "short", "mid", "long", "inter_heatmap", "inter_short", "total"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from strongpose.synthetic import write_dataset
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, split="train", images=8, size=129, seed=0, empty_rate=0.0)
    write_dataset(root, split="two", images=2, size=129, seed=1, empty_rate=0.0,
                  crowd_rate=0.0, people=(1, 2))
    return root


def config(root, *overrides):
    return load_config("tiny", [f"data.coco_root={root}", "data.train_split=train",
                                "model.input_size=129", "train.eval_images=0", *overrides])


def test_optimizer_schedule_ema_and_decay():
    cfg = load_config("tiny", ["train.steps=100", "train.warmup_steps=10",
                               "train.polyak_decay=0.99", "train.learning_rate=0.01"])
    opt = training.build_optimizer(cfg)
    sched = opt._learning_rate           # the WarmupCosine schedule
    assert isinstance(sched, training.WarmupCosine)
    values = [float(sched(s)) for s in (0, 9, 10, 55, 100, 150)]
    assert values[0] == pytest.approx(0.001) and values[1] == pytest.approx(0.01)
    assert values[2] == pytest.approx(0.01) and values[3] == pytest.approx(0.005, rel=1e-3)
    assert values[4] == pytest.approx(0.0, abs=1e-9) and values[5] == pytest.approx(0.0, abs=1e-9)
    assert opt.use_ema and opt.ema_momentum == 0.99
    assert opt.weight_decay == pytest.approx(cfg.train.weight_decay)
    bias, kernel = keras.Variable(np.zeros(3), name="bias"), keras.Variable(np.zeros(3), name="kernel")
    gamma = keras.Variable(np.ones(3), name="gamma")
    assert not opt._use_weight_decay(bias) and not opt._use_weight_decay(gamma)
    assert opt._use_weight_decay(kernel)
    # EMA off at polyak_decay 0; warm-up longer than the run: a tenth of it.
    cfg0 = load_config("tiny", ["train.polyak_decay=0", "train.steps=200", "train.warmup_steps=1000"])
    assert not training.build_optimizer(cfg0).use_ema
    assert training.warmup_steps_for(cfg0, 200) == 20


def test_mixed_precision_compile_wraps_loss_scale(mixed_float16):
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model
    cfg = load_config("tiny", ["train.mixed_precision=true"])
    net = build_model(cfg)
    model = training.TrainingModel(net, StrongPoseLoss.from_config(cfg))
    training.compile_model(model, training.build_optimizer(cfg))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(v.dtype == "float32" for v in net.trainable_variables)


def test_mixed_bfloat16_trains_without_loss_scale():
    """train.mixed_dtype=bfloat16 (CPUs with AMX): bfloat16 compute, float32 variables and
    maps, plain AdamW (no loss scale); checkpoints tell it from float16."""
    from strongpose.checkpoints import architecture
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model
    cfg = load_config("tiny", ["train.mixed_precision=true", "train.mixed_dtype=bfloat16",
                               "model.input_size=65"])
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = build_model(cfg, training_outputs=True)
        model = training.TrainingModel(net, StrongPoseLoss.from_config(cfg))
        training.compile_model(model, training.build_optimizer(cfg))
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(v.dtype == "float32" for v in net.trainable_variables)
    assert any(layer.compute_dtype == "bfloat16" for layer in net.layers)
    images = np.random.default_rng(0).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    outputs = net(images, training=False)
    assert all(keras.ops.convert_to_numpy(v).dtype == np.float32 for v in outputs.values())
    arch = architecture(cfg)
    assert arch["train.mixed_dtype"] == "bfloat16"
    assert "train.mixed_dtype" not in architecture(load_config("tiny", ["train.mixed_precision=true"]))


def test_overfits_reports_every_term_and_resumes(data_root, tmp_path):
    """One run overfits two images (every term reported, finite; files written), then a
    second run in the same folder with more steps resumes at the saved step."""
    from strongpose.data_generator import make_dataset
    from strongpose.model import build_model
    out = tmp_path / "run"
    common = ["data.train_split=two", "train.checkpoint_every=4", "train.learning_rate=0.003",
              "train.warmup_steps=2", "train.polyak_decay=0.9"]
    cfg = config(data_root, "train.steps=20", *common)
    ds = make_dataset(cfg, "two", cache_dir=tmp_path / "cache", training=True, augment=False,
                      progress=False)
    first = train(cfg, out, dataset=ds, verbose=0)
    assert first.initial_step == 0 and first.steps == 20
    assert sorted(first.history) == sorted(TERMS)
    for term in TERMS:
        assert len(first.history[term]) == 5, term
        assert all(math.isfinite(v) for v in first.history[term]), term
    total = first.history["total"]
    assert total[-1] < 0.8 * total[0], total                   # it learns
    for name in ("model.weights.h5", "config.yaml", "log.csv",
                 "checkpoints/step-000000020/state.weights.h5"):
        assert (out / name).is_file(), name
    saved = load_config(out / "config.yaml")
    assert saved.train.steps == 20 and saved.model.input_size == 129
    # The weights file (EMA weights) loads into a plain network of the config.
    net = build_model(cfg)
    net.load_weights(out / "model.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(),
                                                     first.model.network.get_weights()))

    # Again, 4 more steps, data from the split (make_dataset inside train, augmented).
    second = train(config(data_root, "train.steps=24", *common), out, verbose=0)
    assert second.initial_step == 20           # resumed at the saved step ...
    assert second.steps == 24                  # ... with the optimizer's step count restored
    assert len(second.history["total"]) == 1   # one epoch run now, not six
    assert all(math.isfinite(second.history[t][0]) for t in TERMS)


def test_nan_loss_stops_naming_step_and_term(data_root, tmp_path):
    from strongpose.data_generator import make_dataset
    cfg = config(data_root, "train.steps=4", "train.checkpoint_every=2")
    ds = make_dataset(cfg, "train", cache_dir=tmp_path / "cache", progress=False)
    ds = ds.map(lambda images, t: (images, {**t, "mid": t["mid"] * float("nan")}))
    with pytest.raises(NonFiniteLossError, match=r"step 1\b.*mid=nan.*total=nan"):
        train(cfg, tmp_path / "run", dataset=ds, verbose=0)
    assert not (tmp_path / "run" / "checkpoints").exists()     # nothing of that state saved
    assert not (tmp_path / "run" / "model.weights.h5").exists()


def test_unwritable_output_fails_before_building(data_root, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    import strongpose.model
    monkeypatch.setattr(strongpose.model, "build_model",
                        lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(OSError, match="not writable"):
        train(config(data_root), blocker / "run", verbose=0)


def test_disk_space_estimate_counts_the_network_and_what_is_kept(data_root, tmp_path):
    """The parameter count comes from the config without building (and equals the built
    network's); the space needed grows with train.keep_checkpoints and shrinks by the
    checkpoints a resumed run will replace."""
    from strongpose import checkpoints
    from strongpose.model import build_model
    for extra in ([], ["model.backbone=small", "model.head_channels=0",
                       "model.intermediate_supervision=false"]):
        cfg = config(data_root, *extra)
        assert checkpoints.estimated_parameters(cfg) == build_model(cfg).count_params(), extra
    cfg = config(data_root, "train.polyak_decay=0.9")
    params = checkpoints.estimated_parameters(cfg)
    assert checkpoints.checkpoint_bytes(cfg) >= 4 * 4 * params          # weights, 2 slots, EMA
    assert checkpoints.checkpoint_bytes(config(data_root, "train.polyak_decay=0")) \
        < checkpoints.checkpoint_bytes(cfg)
    two = training.disk_space_needed(config(data_root, "train.keep_checkpoints=2"), tmp_path)
    five = training.disk_space_needed(config(data_root, "train.keep_checkpoints=5"), tmp_path)
    assert five - two == 3 * checkpoints.checkpoint_bytes(config(data_root))
    (tmp_path / "checkpoints" / "step-000000001").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000000001" / "state.weights.h5").write_bytes(b"x" * 10**6)
    assert training.disk_space_needed(config(data_root, "train.keep_checkpoints=2"),
                                      tmp_path) == two - 10**6


def test_full_disk_fails_before_building(data_root, tmp_path, monkeypatch):
    """Too little free space for the checkpoints kept and the weights files: one line
    naming the folder, the free space and the space needed; nothing built or written."""
    import shutil
    import strongpose.model
    monkeypatch.setattr(strongpose.model, "build_model",
                        lambda *a, **k: pytest.fail("built a model"))
    cfg = config(data_root, "train.keep_checkpoints=3")
    out = tmp_path / "run"
    needed = training.disk_space_needed(cfg, out)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage._replace(free=needed - 1))
    with pytest.raises(OSError) as err:
        train(cfg, out, verbose=0)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"output folder {str(out)!r} has ")
    assert f"{(needed - 1) / 2**30:.2f} GiB free, the run needs about {needed / 2**30:.2f} GiB" \
        in message and "3 checkpoints of" in message
    assert [p.name for p in out.iterdir()] == []              # no config, no checkpoints
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=needed))
    assert training.check_disk_space(cfg, out) == needed       # just enough: goes on


def test_cli_help_and_one_line_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "train.py"), *a],
                                    capture_output=True, text=True, cwd=tmp_path, timeout=120)
    h = run("--help")
    assert h.returncode == 0 and "OUTPUT_DIR" in h.stdout
    bad = run("--config", "tiny", str(tmp_path / "r"), "train.nope=1")
    assert bad.returncode == 2 and bad.stderr.startswith("train.py: error: train.nope")
    assert len(bad.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ watching a run
def _small_model(ema: bool):
    """A tiny compiled keras model whose optimizer keeps EMA weights (momentum 0.5)."""
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1, name="dense")(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=ema, ema_momentum=0.5), loss="mse")
    return model


def _fit(model, steps, callbacks):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, 3)).astype("float32")
    y = rng.normal(size=(steps, 1)).astype("float32")
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=callbacks, shuffle=False)


def test_validation_callback_keeps_best_weights_only_when_ap_improves(tmp_path):
    from strongpose.callbacks import ValidationAP, read_best
    model = _small_model(ema=False)
    scripted = iter([0.2, 0.5, 0.4, 0.1])
    seen = {}

    def evaluate(net):
        seen[len(seen) + 1] = [w.copy() for w in net.get_weights()]
        return {"AP": next(scripted), "AP50": 0.9}

    cb = ValidationAP(evaluate, model, every=2, total_steps=7, output_dir=tmp_path)
    _fit(model, 7, [cb])
    assert [s for s, _ in cb.history] == [2, 4, 6, 7]           # every 2 steps and the last
    best = read_best(tmp_path)
    assert best["step"] == 4 and best["AP"] == 0.5 and cb.best_ap == 0.5
    saved = _small_model(ema=False)
    saved.load_weights(tmp_path / "best.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), seen[2]))
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    # A run resumed in the same folder keeps the best so far: a worse AP writes nothing.
    again = ValidationAP(lambda net: {"AP": 0.45}, model, every=0, total_steps=2,
                         output_dir=tmp_path)
    _fit(model, 2, [again])
    assert read_best(tmp_path)["step"] == 4 and again.best_ap == 0.5


def test_validation_callback_evaluates_ema_weights_and_restores_training_weights(tmp_path):
    from strongpose.callbacks import ValidationAP, ema_weights
    model = _small_model(ema=True)
    record = {}

    def evaluate(net):
        record["evaluated"] = [w.copy() for w in net.get_weights()]
        opt = net.optimizer
        record["averages"] = [keras.ops.convert_to_numpy(a)
                              for a in opt._model_variables_moving_average]
        return {"AP": 0.3}

    class After(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            record["after"] = [w.copy() for w in self.model.get_weights()]
            record["logged"] = dict(logs)

    cb = ValidationAP(evaluate, model, every=3, total_steps=100, output_dir=None)
    _fit(model, 3, [cb, After()])
    assert all(np.allclose(e, a) for e, a in zip(record["evaluated"], record["averages"]))
    assert not all(np.allclose(e, a) for e, a in zip(record["evaluated"], record["after"]))
    assert record["logged"]["val_AP"] == 0.3
    # The context manager on its own: averages inside, training values after, also on error.
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(RuntimeError):
        with ema_weights(model.optimizer) as swapped:
            assert swapped
            raise RuntimeError("boom")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with ema_weights(_small_model(ema=False).optimizer) as swapped:
        assert not swapped


def test_watching_callbacks_touch_the_model_only_when_due(tmp_path):
    """ValidationAP and TensorBoardScalars count the steps themselves (from first_step, or
    the optimizer's count at the start): between their due steps they never read
    ``self.model`` (on JAX every read copies the whole training state back to the model)."""
    from strongpose.callbacks import TensorBoardScalars, ValidationAP

    def watched(cls):
        class Watched(cls):
            @property
            def model(self):
                self.touched.append(self.step)
                return self._model
        return Watched

    model = _small_model(ema=True)
    val = watched(ValidationAP)(lambda net: {"AP": 0.1}, model, every=4, total_steps=10)
    board = watched(TensorBoardScalars)(tmp_path / "board", every=3)
    val.touched, board.touched = [], []
    _fit(model, 10, [val, board])
    assert [s for s, _ in val.history] == [4, 8, 10]
    assert set(val.touched) == {0, 4, 8, 10}              # the start, then when due
    assert set(board.touched) == {0, 3, 6, 9}
    assert len(_event_tags(tmp_path / "board")) > 0
    # A resumed run: counted from first_step (not read from the model).
    resumed = watched(ValidationAP)(lambda net: {"AP": 0.2}, model, every=4, total_steps=14,
                                    first_step=10)
    resumed.touched = []
    _fit(model, 4, [resumed])
    assert [s for s, _ in resumed.history] == [12, 14] and set(resumed.touched) == {12, 14}


def _event_tags(folder):
    """{tag: plugin name} of the summaries in a folder's event files."""
    tags = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = value.metadata.plugin_data.plugin_name or tags.get(value.tag)
    return tags


def test_cli_reports_validation_ap_keeps_best_and_writes_tensorboard(tmp_path, capsys):
    """train.py with a val split: AP after the last step printed, in log.csv and
    best.weights.h5; TensorBoard scalars (every term, learning rate, val AP) and images."""
    from strongpose.synthetic import write_dataset
    root = tmp_path / "data"
    write_dataset(root, split="train", images=4, size=129, seed=0, empty_rate=0.0)
    write_dataset(root, split="val", images=3, size=129, seed=1, empty_rate=0.0)
    out = tmp_path / "run"
    sys.path.insert(0, str(REPO))
    import train as train_cli
    code = train_cli.main(["--data", str(root), "--quiet", "--train-split", "train", str(out),
                           "data.val_split=val", "train.steps=4", "train.checkpoint_every=2",
                           "train.eval_every=2", "train.eval_images=2", "train.log_every=1",
                           "train.polyak_decay=0.9"])
    err = capsys.readouterr().err
    assert code == 0
    line = [x for x in err.splitlines() if "validation (val, first 2 images): AP " in x]
    assert line and f"best weights: {out / 'best.weights.h5'}" in line[0], err[-2000:]
    ap = float(line[0].split(" AP ")[1].split(",")[0])
    assert 0.0 <= ap <= 1.0 and (out / "best.weights.h5").is_file()
    assert "val_AP" in (out / "log.csv").read_text().splitlines()[0]
    scalars = _event_tags(out / "tensorboard" / "train")
    assert {"total", "heatmap", "learning_rate", "val_AP"} <= set(scalars), scalars
    assert scalars["total"] == "scalars"
    assert _event_tags(out / "tensorboard" / "images").get("val_maps") == "images"
