"""strongpose.distribute, strongpose.memory_data and train.py's engines.

Fast: engine choice and its errors, the batch split, the in-memory batches (cycling,
sharding, bad files), an indivisible global batch refused by train.py, and every module on
train.py's ``--data-npz`` path importable with TensorFlow blocked.
Slow (subprocesses that train, tests/distribute_run.py): two replicas give the same loss
and the same updated weights as one device with the same global batch (TensorFlow
MirroredStrategy over two logical CPUs; JAX DataParallel over two XLA host devices); two
JAX processes on localhost agree with one process; train.py trains on --data-npz with
TensorFlow unimportable. Updates are compared with plain SGD (Adam's first step is
``lr * sign(g)``, blind to a wrong gradient scale) and frozen batch norm (``FROZEN``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

from strongpose import distribute
from strongpose.distribute import DistributeError, Engine

RUN = str(REPO / "tests" / "distribute_run.py")
SIZE, BATCH = 65, 4
# Batch norm in inference mode for the update comparisons: with batch statistics, the tiny
# untrained network's backbone gradients amplify summation-order noise (docs/DISTRIBUTED.md).
FROZEN = ("--set", "model.freeze_batchnorm=true")


def env(**extra: str) -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    for key in ("TF_CONFIG", "XLA_FLAGS", *distribute.JAX_ENV):
        e.pop(key, None)
    e.update(extra)
    return e


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """3 batches of 4 at 65 px from the tiny preset's pipeline on drawn images."""
    pytest.importorskip("tensorflow")
    from strongpose.config import load_config
    from strongpose.memory_data import dump
    from strongpose.synthetic import write_dataset
    root = tmp_path_factory.mktemp("dist")
    write_dataset(root, split="train", images=8, size=129, seed=0, empty_rate=0.0)
    cfg = load_config("tiny", [f"data.coco_root={root}", f"model.input_size={SIZE}",
                               f"train.batch_size={BATCH}"])
    return dump(cfg, "train", root / "batches.npz", 3, cache_dir=root / "cache")


# ------------------------------------------------------------------ engines, fast
def test_batch_split_and_refusal():
    two = Engine(distribute.TF_MIRRORED, replicas=2)
    assert two.per_replica_batch(8) == 4
    with pytest.raises(DistributeError, match=r"batch_size=3 .* not divisible by the 2 replicas"):
        two.per_replica_batch(3)
    procs = Engine(distribute.JAX_DATA_PARALLEL, replicas=4, processes=2, process_id=1)
    assert procs.per_process_batch(8) == 4 and procs.per_replica_batch(8) == 2
    assert not procs.is_chief and "process 1 of 2" in procs.describe()
    with pytest.raises(DistributeError, match="4 replicas"):
        procs.per_process_batch(6)


def test_engine_choice_and_its_errors(monkeypatch):
    for key in ("TF_CONFIG", *distribute.JAX_ENV):
        monkeypatch.delenv(key, raising=False)
    import keras
    backend = keras.backend.backend()
    engine = distribute.select_engine("auto")   # this process: one CPU device
    assert engine.name == distribute.ONE_DEVICE and engine.replicas == 1
    other = distribute.JAX_DATA_PARALLEL if backend == "tensorflow" else distribute.TF_MIRRORED
    with pytest.raises(DistributeError, match="needs KERAS_BACKEND"):
        distribute.select_engine(other)
    with pytest.raises(DistributeError, match="unknown engine 'mirror'"):
        distribute.select_engine("mirror")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(DistributeError, match="TF_CONFIG is not JSON"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"], "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}}))
    assert distribute.tf_config_workers(distribute.tf_config()) == 3
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.jax_process_env() is None
    with pytest.raises(DistributeError, match="needs the coordinator address"):
        distribute.jax_process_env(coordinator="localhost:1234")
    with pytest.raises(DistributeError, match=r"process id 2 is not in 0\.\.1"):
        distribute.jax_process_env("localhost:1234", 2, 2)
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "h:1")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert distribute.jax_process_env() == ("h:1", 2, 1)


# ------------------------------------------------------------------ in-memory batches
def test_npz_batches_cycle_and_shard(npz, tmp_path):
    from strongpose.memory_data import NpzBatches, load_arrays
    images, targets, meta = load_arrays(npz)
    assert images.shape == (12, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert meta["batch_size"] == BATCH and meta["input_size"] == SIZE
    assert {"heatmap", "heatmap_weight", "short", "mid", "long", "body"} <= set(targets)
    whole = NpzBatches(npz, 8, input_size=SIZE)
    x, y = whole[1]                                # images 8..11 then 0..3: cycled
    assert x.dtype == np.float32 and x.shape == (8, SIZE, SIZE, 3)
    np.testing.assert_array_equal(x[:4], images[8:12])
    np.testing.assert_array_equal(x[4:], images[:4])
    np.testing.assert_array_equal(y["mid"][4:], targets["mid"][:4])
    halves = [NpzBatches(npz, 8, shard=(i, 2))[1] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), x)
    with pytest.raises(ValueError, match="129 is the config's|model.input_size is 129"):
        NpzBatches(npz, 8, input_size=129)
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the 4 processes"):
        NpzBatches(npz, 6, shard=(0, 4))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz.* not a readable batches file"):
        load_arrays(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a strongpose batches file"):
        load_arrays(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="memory_data dump"):
        load_arrays(tmp_path / "missing.npz")


NO_TF_IMPORTS = """
import sys
sys.modules["tensorflow"] = None          # any 'import tensorflow' now raises ImportError
import keras, runpy
assert keras.backend.backend() == "jax"
import strongpose.training, strongpose.memory_data, strongpose.distribute, strongpose.model
import strongpose.losses
sys.argv = ["train.py", "--help"]
try:
    runpy.run_path(sys.argv_path, run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
print("ok")
"""


def test_data_npz_path_imports_without_tensorflow():
    pytest.importorskip("jax")
    code = NO_TF_IMPORTS.replace("sys.argv_path", repr(str(REPO / "train.py")))
    p = subprocess.run([sys.executable, "-c", code], env=env(KERAS_BACKEND="jax"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-2000:]


def test_train_py_refuses_indivisible_global_batch(npz, tmp_path):
    pytest.importorskip("jax")
    p = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--data-npz", str(npz), str(tmp_path / "run"),
         f"model.input_size={SIZE}", "train.batch_size=3", "train.steps=1"],
        env=env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert ("train.py: error: train.batch_size=3 (the global batch) is not divisible by the 2 "
            "replicas of jax-data-parallel") in p.stderr
    assert not (tmp_path / "run").exists()          # refused before anything is written


# ------------------------------------------------------------------ training, slow
def run(npz: Path, out: Path, *args: str, backend: str = "tensorflow", timeout: int = 900,
        **extra: str) -> dict:
    p = subprocess.run([sys.executable, RUN, "--backend", backend, "--npz", str(npz),
                        "--size", str(SIZE), "--batch", str(BATCH), "--sgd", *args, str(out)],
                       env=env(**extra), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    with np.load(out / "result.npz") as z:
        return {k: z[k] for k in z.files}


def assert_same_training(a: dict, b: dict) -> None:
    """Same start, same losses; every weight's difference tiny against that weight's update."""
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    assert list(a["names"]) == list(b["names"])
    for i, name in enumerate(a["names"]):
        np.testing.assert_allclose(a[f"i{i}"], b[f"i{i}"], rtol=1e-6, atol=1e-7, err_msg=str(name))
        step = np.abs(a[f"w{i}"] - a[f"i{i}"]).max()
        diff = np.abs(a[f"w{i}"] - b[f"w{i}"]).max()
        # TensorFlow agrees to ~4e-5 of the update, JAX to ~2e-3 (XLA sums a sharded
        # batch in another order); a wrong loss scale or gradient sum is >= 50 %.
        assert diff <= 5e-3 * step + 1e-7, (name, diff, step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tf_mirrored_two_replicas_match_one_device(npz, tmp_path):
    one = run(npz, tmp_path / "one", "--steps", "2", *FROZEN)
    two = run(npz, tmp_path / "two", "--steps", "2", "--devices", "2",
              "--engine", "tf-mirrored", *FROZEN)
    assert_same_training(one, two)


@pytest.mark.slow
def test_tf_multi_worker_two_processes_match_one_device(npz, tmp_path):
    one = run(npz, tmp_path / "one", "--steps", "2", *FROZEN)
    ports, out = [free_port(), free_port()], tmp_path / "two"
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [subprocess.Popen(
        [sys.executable, RUN, "--npz", str(npz), "--size", str(SIZE), "--batch", str(BATCH),
         "--sgd", "--steps", "2", "--tfdata", *FROZEN, str(out)],
        env=env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    logs = [p.communicate(timeout=900)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    assert "tf-multi-worker: 2 replicas" in logs[0]
    for path in (out / "result.npz", out / "worker1" / "result.npz"):
        with np.load(path) as z:
            assert_same_training(one, {k: z[k] for k in z.files})


@pytest.mark.slow
def test_jax_data_parallel_two_devices_match_one_device(npz, tmp_path):
    pytest.importorskip("jax")
    one = run(npz, tmp_path / "one", "--steps", "2", *FROZEN, backend="jax")
    two = run(npz, tmp_path / "two", "--steps", "2", "--devices", "2",
              "--engine", "jax-data-parallel", *FROZEN, backend="jax")
    assert_same_training(one, two)


@pytest.mark.slow
def test_jax_two_processes_match_one_process(npz, tmp_path):
    pytest.importorskip("jax")
    one = run(npz, tmp_path / "one", "--steps", "2", *FROZEN, backend="jax")
    port, out = free_port(), tmp_path / "two"
    procs = [subprocess.Popen(
        [sys.executable, RUN, "--backend", "jax", "--npz", str(npz), "--size", str(SIZE),
         "--batch", str(BATCH), "--sgd", "--steps", "2", "--coordinator", f"localhost:{port}",
         "--num-processes", "2", "--process-id", str(i), *FROZEN, str(out)],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    logs = [p.communicate(timeout=900)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    for path in (out / "result.npz", out / "worker1" / "result.npz"):  # both processes agree
        with np.load(path) as z:
            assert_same_training(one, {k: z[k] for k in z.files})


@pytest.mark.slow
def test_train_py_data_npz_without_tensorflow(npz, tmp_path):
    pytest.importorskip("jax")
    code = ("import sys, runpy; sys.modules['tensorflow'] = None; "
            f"sys.argv = ['train.py', '--quiet', '--data-npz', {str(npz)!r}, "
            f"{str(tmp_path / 'run')!r}, 'model.input_size={SIZE}', 'train.batch_size={BATCH}', "
            "'train.steps=2', 'train.checkpoint_every=1', 'train.warmup_steps=0']; "
            f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], env=env(KERAS_BACKEND="jax"),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "one-device: 1 replica" in p.stderr and "2 steps (from 0)" in p.stderr
    assert (tmp_path / "run" / "model.weights.h5").is_file()
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and all(np.isfinite(float(v)) for v in log[-1].split(",")[1:] if v != "NA")
