"""Training batches held in memory: dump the ``tf.data`` pipeline's batches to one ``.npz``,
read them back as NumPy batches with no TensorFlow (a JAX-only machine).

    # here (TensorFlow): 16 batches of the tiny preset's pipeline, augmented, with targets
    python -m strongpose.memory_data dump --config tiny --data synth --split train \\
        --batches 16 batches.npz
    # there (JAX only):
    KERAS_BACKEND=jax python train.py --config tiny --data-npz batches.npz runs/x

The file holds ``images`` (N, S, S, 3) uint8 (the pipeline's float 0..255 images rounded),
one float32 array per target map (``target/<key>``, (N, h, w, C)) and ``meta`` (JSON: the
input size, output stride and the batch size it was dumped with). :class:`NpzBatches` cycles
its N images in file order in batches of any size (batch ``i`` holds images
``i*B .. i*B+B-1`` modulo N), optionally only one process's rows of each batch (``shard``),
as a ``keras.utils.PyDataset`` that ``fit`` runs on any backend.

This module imports NumPy and Keras only; TensorFlow is imported by :func:`dump` alone.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from strongpose import cli
from strongpose.config import Config
from strongpose.files import atomic_write

IMAGES_KEY = "images"
TARGET_PREFIX = "target/"
META_KEY = "meta"


def dump(cfg: Config, split: str, out_path: str | os.PathLike, batches: int, *,
         image_dir: Optional[str | os.PathLike] = None,
         cache_dir: Optional[str | os.PathLike] = None, seed: int = 0) -> Path:
    """Write ``batches`` training batches of ``make_dataset(cfg, split)`` to ``out_path``.

    Batches of ``cfg.train.batch_size``, training mode (augmented, shuffled) with ``seed``.
    Returns the path written (``.npz`` appended by NumPy if missing).
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    from strongpose.data_generator import make_dataset  # TensorFlow from here on

    out = Path(out_path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out.parent / "data_cache"
    ds = make_dataset(cfg, split, image_dir, cache, training=True, seed=seed, progress=False)
    images, targets = [], {}
    for x, y in ds.take(batches):
        images.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
        for key, value in y.items():
            targets.setdefault(key, []).append(value.numpy().astype(np.float32))
    meta = {"input_size": int(cfg.model.input_size), "output_stride": int(cfg.model.output_stride),
            "batch_size": int(cfg.train.batch_size), "batches": int(batches), "seed": int(seed),
            "split": str(split)}
    arrays = {IMAGES_KEY: np.concatenate(images),
              META_KEY: np.array(json.dumps(meta))}
    arrays.update({TARGET_PREFIX + k: np.concatenate(v) for k, v in targets.items()})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # targets are mostly zeros: ~5x smaller
    return atomic_write(out, write)


def load_arrays(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(images uint8 (N, S, S, 3), targets {key: float32 (N, h, w, C)}, meta)`` of a dump."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{str(p)!r}: no such batches file (write one with "
                                "'python -m strongpose.memory_data dump ...')")
    try:
        with np.load(p, allow_pickle=False) as z:
            names = set(z.files)
            images = z[IMAGES_KEY] if IMAGES_KEY in names else None
            meta = json.loads(str(z[META_KEY])) if META_KEY in names else None
            targets = {n[len(TARGET_PREFIX):]: z[n] for n in sorted(names)
                       if n.startswith(TARGET_PREFIX)}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # not zip, pickled, bad JSON
        raise ValueError(f"{str(p)!r} is not a readable batches file: {exc}") from exc
    if images is None or meta is None:
        raise ValueError(f"{str(p)!r} is not a strongpose batches file "
                         f"(no {IMAGES_KEY!r}/{META_KEY!r} arrays)")
    if not targets:
        raise ValueError(f"{str(p)!r} holds no target maps")
    return images, targets, meta


class NpzBatches(keras.utils.PyDataset):
    """Batches ``(images float32, targets dict)`` cycled from a dump; endless.

    Args:
        path: the ``.npz`` written by :func:`dump`.
        batch_size: images per batch (the global batch, before ``shard``).
        input_size: expected image side (a ``ValueError`` if the file's differs).
        shard: ``(index, count)``: yield only rows ``index*B/count .. (index+1)*B/count`` of
            each global batch (one process of ``count``; ``B`` must be divisible).
    """

    def __init__(self, path: str | os.PathLike, batch_size: int, *,
                 input_size: Optional[int] = None, shard: tuple[int, int] = (0, 1)) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.targets, self.meta = load_arrays(path)
        size = int(self.images.shape[1])
        if input_size is not None and size != int(input_size):
            raise ValueError(f"{str(path)!r} holds {size}-pixel images; the config's "
                             f"model.input_size is {input_size}")
        index, count = (int(v) for v in shard)
        if batch_size < 1 or batch_size % count:
            raise ValueError(f"batch size {batch_size} is not divisible by the {count} "
                             "processes that share each batch")
        if not 0 <= index < count:
            raise ValueError(f"shard index {index} is not in 0..{count - 1}")
        self.batch_size = int(batch_size)
        self.local = self.batch_size // count
        self.offset = index * self.local

    @property
    def num_batches(self) -> None:
        return None  # endless: fit's steps_per_epoch bounds each epoch

    def rows(self, index: int) -> np.ndarray:
        """The file rows of batch ``index`` (this shard's part)."""
        start = index * self.batch_size + self.offset
        return (start + np.arange(self.local)) % len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows = self.rows(int(index))
        return (self.images[rows].astype(np.float32),
                {k: v[rows] for k, v in self.targets.items()})


# ------------------------------------------------------------------ command line
def main(argv: Optional[Sequence[str]] = None) -> int:
    """``dump``: write batches of the training pipeline to an ``.npz``."""
    ap = cli.ArgumentParser(prog="python -m strongpose.memory_data",
                            description="Dump training batches (images + targets) to .npz.")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="run the tf.data pipeline and save N batches")
    d.add_argument("--config", default="tiny", help="preset name or YAML path")
    d.add_argument("--data", default=None, help="COCO-layout folder (data.coco_root)")
    d.add_argument("--split", default=None, help="split name or keypoints JSON (data.train_split)")
    d.add_argument("--image-dir", default=None, help="images folder (default DATA/<split>)")
    d.add_argument("--batches", type=int, default=8, help="batches to write (default 8)")
    d.add_argument("--seed", type=int, default=0, help="augmentation and order seed")
    d.add_argument("--cache-dir", default=None, help="prepare()'s cache (default OUT's folder)")
    d.add_argument("out", metavar="OUT.npz")
    d.add_argument("overrides", nargs="*", help="config overrides, e.g. train.batch_size=16")
    args = ap.parse_args(argv)
    from strongpose.config import load_config
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.coco_root={args.data}")
    cfg = load_config(args.config, overrides)
    cli.import_tensorflow()
    out = dump(cfg, args.split or cfg.data.train_split, args.out, args.batches,
               image_dir=args.image_dir, cache_dir=args.cache_dir, seed=args.seed)
    n = args.batches * cfg.train.batch_size
    print(f"memory_data: {n} images ({args.batches} batches of {cfg.train.batch_size}) "
          f"-> {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m strongpose.memory_data"))
