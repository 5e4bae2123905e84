"""strongpose.training and train.py: a few steps of the tiny network on drawn images.

Every loss term is reported and finite; two images are overfitted; a second run in the same
folder resumes at the saved step with the optimizer state; a NaN stops training at once
naming the step and the term; an unwritable output folder fails before anything is built.
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
                                "model.input_size=129", *overrides])


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


def test_mixed_precision_compile_wraps_loss_scale():
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model
    cfg = load_config("tiny", ["train.mixed_precision=true"])
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = build_model(cfg)
        model = training.TrainingModel(net, StrongPoseLoss.from_config(cfg))
        training.compile_model(model, training.build_optimizer(cfg))
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(v.dtype == "float32" for v in net.trainable_variables)


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


def test_cli_help_and_one_line_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "train.py"), *a],
                                    capture_output=True, text=True, cwd=tmp_path, timeout=120)
    h = run("--help")
    assert h.returncode == 0 and "OUTPUT_DIR" in h.stdout
    bad = run("--config", "tiny", str(tmp_path / "r"), "train.nope=1")
    assert bad.returncode == 2 and bad.stderr.startswith("train.py: error: train.nope")
    assert len(bad.stderr.strip().splitlines()) == 1
