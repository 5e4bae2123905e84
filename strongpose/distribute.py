"""Which engine trains: one device, several devices, several processes (docs/DISTRIBUTED.md).

    from strongpose import distribute

    engine = distribute.select_engine("auto")     # before any TensorFlow/JAX computation
    print(engine.describe())                      # "tf-mirrored: 2 replicas (...)"
    with engine.scope():                          # build, compile and fit inside
        ...
    engine.per_replica_batch(cfg.train.batch_size)   # ValueError if not divisible

Engines (``ENGINES``), picked from the Keras backend, the visible devices and the process
environment when ``mode="auto"``, or named:

- ``one-device``: no strategy; the whole global batch on the first device.
- ``tf-mirrored`` (TensorFlow): ``tf.distribute.MirroredStrategy`` over every visible GPU
  (or, without GPUs, every logical CPU device when there are several).
- ``tf-multi-worker`` (TensorFlow): ``tf.distribute.MultiWorkerMirroredStrategy`` from
  ``TF_CONFIG`` (one process per machine, each on its local GPUs).
- ``jax-data-parallel`` (JAX): ``keras.distribution.DataParallel`` over every device of
  every process; several processes after ``keras.distribution.initialize(coordinator,
  num_processes, process_id)`` (arguments or ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` /
  ``_NUM_PROCESSES`` / ``_PROCESS_ID``).

The global batch ``train.batch_size`` is split evenly over the replicas; the loss is the sum
of per-image losses over the *global* batch divided by the global batch
(:func:`global_batch_size` gives the divisor inside a train step), so N replicas with global
batch B take the same step as one device with batch B.

Importing this module imports the standard library only (command lines read ``MODES``
before Keras starts); Keras, TensorFlow or JAX are imported where they are used.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

ONE_DEVICE = "one-device"
TF_MIRRORED = "tf-mirrored"
TF_MULTI_WORKER = "tf-multi-worker"
JAX_DATA_PARALLEL = "jax-data-parallel"
ENGINES = (ONE_DEVICE, TF_MIRRORED, TF_MULTI_WORKER, JAX_DATA_PARALLEL)
MODES = ("auto",) + ENGINES
BACKEND_OF = {TF_MIRRORED: "tensorflow", TF_MULTI_WORKER: "tensorflow",
              JAX_DATA_PARALLEL: "jax"}
JAX_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
           "KERAS_DISTRIBUTION_PROCESS_ID")


class DistributeError(ValueError):
    """An engine that cannot run here, or a batch it cannot split."""


@dataclass
class Engine:
    """A chosen engine: its strategy (TF) or distribution (JAX), replicas and processes."""

    name: str
    replicas: int = 1                 # devices sharing each global batch, all processes
    processes: int = 1
    process_id: int = 0
    devices: tuple[str, ...] = ()
    strategy: Any = None              # tf.distribute.Strategy (TensorFlow engines)
    distribution: Any = None          # keras.distribution.DataParallel (JAX)

    @property
    def is_chief(self) -> bool:
        """The process that writes the run's files (process 0)."""
        return self.process_id == 0

    @contextlib.contextmanager
    def scope(self) -> Iterator["Engine"]:
        """Build, compile and fit inside: the strategy's scope, or the JAX distribution set."""
        import keras

        if self.strategy is not None:
            with self.strategy.scope():
                yield self
        elif self.distribution is not None:
            previous = keras.distribution.distribution()
            keras.distribution.set_distribution(self.distribution)
            try:
                yield self
            finally:
                keras.distribution.set_distribution(previous)
        else:
            yield self

    def per_replica_batch(self, global_batch: int) -> int:
        """``global_batch / replicas``; :class:`DistributeError` if not a whole number."""
        return _split(global_batch, self.replicas, "replicas", self)

    def per_process_batch(self, global_batch: int) -> int:
        """The images of each global batch one process feeds."""
        self.per_replica_batch(global_batch)
        return _split(global_batch, self.processes, "processes", self)

    def prepare_dataset(self, dataset: Any) -> Any:
        """``dataset`` ready for ``fit`` under this engine.

        A ``tf.data.Dataset`` gets prefetching and, under ``tf-multi-worker``, DATA
        auto-sharding (every worker runs the same seeded pipeline and keeps its share of each
        global batch). Any other dataset (e.g. ``memory_data.NpzBatches``) under a
        multi-process JAX run must already yield this process's share of each batch: Keras'
        auto-sharding, which accepts only ``tf.data``, is turned off.
        """
        if type(dataset).__module__.startswith("tensorflow"):
            import tensorflow as tf
            if self.name == TF_MULTI_WORKER:
                options = tf.data.Options()
                options.experimental_distribute.auto_shard_policy = (
                    tf.data.experimental.AutoShardPolicy.DATA)
                dataset = dataset.with_options(options)
            return dataset.prefetch(tf.data.AUTOTUNE)
        if self.distribution is not None and self.processes > 1:
            self.distribution.auto_shard_dataset = False
        return dataset

    def describe(self) -> str:
        """One line: engine, replicas, processes, devices."""
        procs = f", process {self.process_id} of {self.processes}" if self.processes > 1 else ""
        devs = f" on {', '.join(self.devices)}" if self.devices else ""
        return f"{self.name}: {self.replicas} replica{'s' * (self.replicas != 1)}{procs}{devs}"


def _split(total: int, parts: int, what: str, engine: Engine) -> int:
    if int(total) < 1 or int(total) % parts:
        raise DistributeError(
            f"train.batch_size={total} (the global batch) is not divisible by the {parts} "
            f"{what} of {engine.name}: use a multiple of {parts}")
    return int(total) // parts


def synchronize_batchnorm(model: Any, engine: Engine) -> int:
    """Under a TensorFlow engine with several replicas, make every ``BatchNormalization``
    layer of ``model`` compute its batch statistics over the global batch
    (``synchronized=True``: three all-reduces per layer and step), as one device would; returns
    how many layers were changed (0 elsewhere: JAX ``DataParallel`` already normalises over
    the global, sharded batch). Call before the first train step."""
    import keras

    if engine.strategy is None or engine.replicas < 2:
        return 0
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            count += 1
    return count


def _all_layers(model: Any) -> list:
    layers, stack = [], [model]
    while stack:
        layer = stack.pop()
        for sub in getattr(layer, "layers", None) or []:  # models nest models
            layers.append(sub)
            stack.append(sub)
    return layers


# ------------------------------------------------------------------ inside a train step
def replicas_in_sync() -> int:
    """Replicas whose losses are summed in the current step: the ``tf.distribute``
    strategy's ``num_replicas_in_sync`` on TensorFlow; 1 on JAX (``DataParallel`` steps see
    the whole global batch as one sharded array)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def global_batch_size(local_batch: Any) -> Any:
    """The global batch of the current step from this replica's batch size."""
    return local_batch * replicas_in_sync()


def logs_for_multi_worker(logs: dict) -> dict:
    """Inside a ``MultiWorkerMirroredStrategy`` replica: each scalar of ``logs`` as shape
    (1,). Keras 3's TensorFlow trainer reduces a step's logs across workers with
    ``strategy.reduce("MEAN", value, axis=0)``, which raises "Invalid reduction dimension 0
    for input with 0 dimensions" on the scalars every metric returns; with one axis the
    reduce is the mean over replicas of an already synchronised value (the value itself).
    Anywhere else ``logs`` is returned as is."""
    import keras
    if keras.backend.backend() != "tensorflow":
        return logs
    import tensorflow as tf
    if tf.distribute.in_cross_replica_context() or not isinstance(
            tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {k: tf.reshape(v, (1,)) if getattr(v, "shape", None) is not None and
            v.shape.rank == 0 else v for k, v in logs.items()}


# ------------------------------------------------------------------ choosing
def tf_config() -> Optional[dict]:
    """``TF_CONFIG`` parsed (None when unset); :class:`DistributeError` if not JSON."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DistributeError(f"TF_CONFIG is not JSON: {exc}") from exc
    if not isinstance(conf, dict) or "cluster" not in conf or "task" not in conf:
        raise DistributeError("TF_CONFIG needs 'cluster' and 'task' keys")
    return conf


def tf_config_workers(conf: Optional[dict]) -> int:
    """Workers (chief included) in a ``TF_CONFIG``; 0 without one."""
    if not conf:
        return 0
    cluster = conf.get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def jax_process_env(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
                    process_id: Optional[int] = None) -> Optional[tuple[str, int, int]]:
    """``(coordinator, num_processes, process_id)`` from the arguments, else from
    ``KERAS_DISTRIBUTION_*``; None when neither names a multi-process run."""
    env = os.environ
    coordinator = coordinator or env.get(JAX_ENV[0])
    if num_processes is None and env.get(JAX_ENV[1]):
        num_processes = int(env[JAX_ENV[1]])
    if process_id is None and env.get(JAX_ENV[2]):
        process_id = int(env[JAX_ENV[2]])
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if not all(given):
        raise DistributeError("a multi-process JAX run needs the coordinator address, the "
                              "number of processes and this process's id (--coordinator, "
                              "--num-processes, --process-id or KERAS_DISTRIBUTION_*)")
    if not 0 <= int(process_id) < int(num_processes):
        raise DistributeError(f"process id {process_id} is not in 0..{int(num_processes) - 1}")
    return str(coordinator), int(num_processes), int(process_id)


def select_engine(mode: str = "auto", *, coordinator: Optional[str] = None,
                  num_processes: Optional[int] = None,
                  process_id: Optional[int] = None) -> Engine:
    """The engine for this backend, these devices and this process environment.

    Call before TensorFlow or JAX has run anything (multi-worker and multi-process set up
    their runtime here). ``mode``: ``"auto"`` or one of ``ENGINES``.
    """
    import keras

    if mode not in MODES:
        raise DistributeError(f"unknown engine {mode!r}; choose from {', '.join(MODES)}")
    backend = keras.backend.backend()
    if backend != "jax" and any(v is not None for v in (coordinator, num_processes, process_id)):
        raise DistributeError("--coordinator/--num-processes/--process-id are for the JAX "
                              "backend; on TensorFlow, several machines are set by TF_CONFIG")
    if mode in BACKEND_OF and BACKEND_OF[mode] != backend:
        raise DistributeError(f"engine {mode} needs KERAS_BACKEND={BACKEND_OF[mode]} "
                              f"(this is {backend})")
    if backend == "tensorflow":
        return _select_tf(mode)
    if backend == "jax":
        return _select_jax(mode, coordinator, num_processes, process_id)
    if mode not in ("auto", ONE_DEVICE):
        raise DistributeError(f"engine {mode} is not available on the {backend} backend")
    return Engine(ONE_DEVICE)


def _select_tf(mode: str) -> Engine:
    import tensorflow as tf
    conf = tf_config()
    workers = tf_config_workers(conf)
    if mode == TF_MULTI_WORKER or (mode == "auto" and workers > 1):
        if workers < 1:
            raise DistributeError("tf-multi-worker needs TF_CONFIG (cluster + task)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = conf["task"]
        rank = int(task.get("index", 0)) + (
            len(conf["cluster"].get("chief", [])) if task.get("type") == "worker" else 0)
        return Engine(TF_MULTI_WORKER, int(strategy.num_replicas_in_sync), workers, rank,
                      strategy=strategy)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    if mode == TF_MIRRORED or (mode == "auto" and len(devices) > 1):
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Engine(TF_MIRRORED, int(strategy.num_replicas_in_sync), devices=tuple(devices),
                      strategy=strategy)
    return Engine(ONE_DEVICE, devices=tuple(devices[:1]))


def _hide_gpus_from_tensorflow() -> None:
    """On the JAX backend TensorFlow (if imported, for ``tf.data``) only feeds data: keep it
    off the GPUs so it does not reserve their memory."""
    import sys
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices: nothing to change
        pass


def _select_jax(mode: str, coordinator: Optional[str], num_processes: Optional[int],
                process_id: Optional[int]) -> Engine:
    import keras

    procs = jax_process_env(coordinator, num_processes, process_id)
    _hide_gpus_from_tensorflow()
    if procs is not None and procs[1] > 1:
        if mode == ONE_DEVICE:
            raise DistributeError("one-device cannot run several processes")
        keras.distribution.initialize(procs[0], procs[1], procs[2])
    import jax
    devices = jax.devices()
    if mode == JAX_DATA_PARALLEL or (mode == "auto" and (len(devices) > 1 or procs)):
        dist = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        return Engine(JAX_DATA_PARALLEL, len(devices), jax.process_count(), jax.process_index(),
                      devices=tuple(str(d) for d in jax.local_devices()), distribution=dist)
    return Engine(ONE_DEVICE, devices=(str(devices[0]),))

