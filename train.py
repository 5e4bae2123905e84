"""Train StrongPose on one device, several GPUs or several machines (Keras fit); run again
in the same folder to resume.

    python train.py --config quickstart runs/quickstart          # the README's quick start
    python train.py --config tiny --data synth runs/tiny
    python train.py --config tiny --data synth --train-split train runs/tiny train.steps=400
    python train.py --config strongpose --data coco2017 runs/big train.batch_size=4
    KERAS_BACKEND=jax python train.py --config tiny --data-npz batches.npz runs/x   # no TF

The engine (``--distribute``, default ``auto``; docs/DISTRIBUTED.md): every visible GPU of
this machine (``tf-mirrored`` on TensorFlow, ``jax-data-parallel`` on JAX); several machines
with ``TF_CONFIG`` (``tf-multi-worker``) or, on JAX, ``--coordinator HOST:PORT
--num-processes N --process-id I`` (or ``KERAS_DISTRIBUTION_*``). ``train.batch_size`` is
the global batch, split over all replicas. ``--data-npz`` trains on batches dumped by
``python -m strongpose.memory_data dump`` (cycled; no TensorFlow needed on the JAX backend).

DATA holds ``annotations/person_keypoints_<split>.json`` and ``<split>/`` images (COCO
layout; ``data.coco_root``). OUTPUT_DIR gets ``config.yaml``, ``log.csv``, ``checkpoints/``
(every ``train.checkpoint_every`` steps, at the end and on Ctrl-C/SIGTERM; the newest
``train.keep_checkpoints`` kept), ``data_cache/`` and, at the end, ``model.weights.h5`` (EMA
weights when ``train.polyak_decay > 0``); with a validation split (``data.val_split``,
``train.eval_images`` > 0): COCO AP every ``train.eval_every`` steps and at the end (printed),
``best.weights.h5`` (best AP) and ``tensorboard/``. Running again with the same OUTPUT_DIR
continues from the latest checkpoint with the same batches as an unbroken run
(``train.steps`` may be raised).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strongpose import cli  # noqa: E402  (standard library only)
from strongpose.distribute import MODES  # noqa: E402  (standard library only)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (with ``--debug``); usage errors exit 2 with one line."""
    ap = cli.ArgumentParser(prog="train.py", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny", help="preset name or YAML path (default: tiny)")
    ap.add_argument("--data", default=None, help="COCO-layout data folder (data.coco_root)")
    ap.add_argument("--train-split", default=None, help="split name (data.train_split)")
    ap.add_argument("--image-dir", default=None, help="images folder (default DATA/<split>)")
    ap.add_argument("--data-npz", default=None, metavar="NPZ",
                    help="train on batches dumped by 'python -m strongpose.memory_data dump' "
                         "instead of DATA (no TensorFlow needed with KERAS_BACKEND=jax)")
    ap.add_argument("--distribute", default="auto", choices=MODES,
                    help="engine (default auto: all visible GPUs; TF_CONFIG or the JAX "
                         "process flags for several machines)")
    ap.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                    help="JAX multi-process: process 0's address")
    ap.add_argument("--num-processes", type=int, default=None, help="JAX multi-process: N")
    ap.add_argument("--process-id", type=int, default=None, help="JAX multi-process: 0..N-1")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    ap.add_argument("--quiet", action="store_true", help="one line per epoch, no bar")
    ap.add_argument("output_dir", metavar="OUTPUT_DIR", help="run folder (resumed if it has a checkpoint)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=400")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)          # --help and usage errors end here, before TensorFlow
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.coco_root={args.data}")
    if args.train_split is not None:
        overrides.append(f"data.train_split={args.train_split}")
    from strongpose.config import load_config
    cfg = load_config(args.config, overrides)   # bad config: one line, before TensorFlow

    import os
    if args.data_npz is None or os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        cli.import_tensorflow()      # quietly; the JAX + --data-npz path runs without it
    from strongpose import distribute
    engine = distribute.select_engine(args.distribute, coordinator=args.coordinator,
                                      num_processes=args.num_processes,
                                      process_id=args.process_id)
    print(f"train.py: {engine.describe()}; global batch {cfg.train.batch_size} "
          f"({engine.per_replica_batch(cfg.train.batch_size)} per replica)", file=sys.stderr)
    dataset = None
    if args.data_npz is not None:
        from strongpose.memory_data import NpzBatches
        shard = (engine.process_id, engine.processes) if engine.distribution is not None else (0, 1)
        dataset = NpzBatches(args.data_npz, cfg.train.batch_size,
                             input_size=cfg.model.input_size, shard=shard)
    from strongpose.training import TrainingInterrupted, train
    try:
        result = train(cfg, args.output_dir, image_dir=args.image_dir, seed=args.seed,
                       dataset=dataset, verbose=2 if args.quiet else "auto", engine=engine)
    except TrainingInterrupted as exc:        # checkpointed: say where, and how to go on
        print(f"train.py: {exc}", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    speed = f", {result.images_per_second:.1f} images/s" if result.images_per_second else ""
    print(f"train.py: {result.steps} steps (from {result.initial_step}){speed}; "
          f"weights: {result.weights_path}", file=sys.stderr)
    if result.validation is not None:
        v = result.validation
        print(f"train.py: validation ({cfg.data.val_split}, first {cfg.train.eval_images} images): "
              f"AP {v['AP']:.3f}, AP50 {v['AP50']:.3f}, AP75 {v['AP75']:.3f}; best weights: "
              f"{result.best_weights}", file=sys.stderr)
    return 0


def run() -> int:
    """The installed ``strongpose-train`` command."""
    return cli.run(main, prog="strongpose-train")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="train.py"))
