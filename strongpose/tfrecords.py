"""COCO keypoints (JSON + images) <-> sharded TFRecords, read by ``make_dataset``.

    python -m strongpose.tfrecords coco2017 tfrecords/train --split train2017
    python -m strongpose.tfrecords synth/annotations/person_keypoints_train.json out --shards 4

Conversion runs :func:`strongpose.data_generator.prepare` (images checked and decoded
whole, bad ones skipped and counted, person masks rasterised into the packed label PNG),
then writes one ``tf.train.Example`` per kept image, in the prepared set's order, into
``N`` shards of contiguous images (``shard_starts``)::

    out_dir/
        shard-00000-of-00004.tfrecord     written to a temporary name, then renamed
        ...
        meta.json                          last: shards, counts, max_people, skipped files

Each example: ``image`` (the image file's bytes, JPEG as is), ``label`` (the packed label
PNG bytes, empty when the image has no mask, crowd or unannotated region), ``keypoints``
(num_people * K * 3 floats), ``has_mask`` (num_people ints), ``num_people``, ``image_id``,
``height``, ``width``.

:class:`TFRecordSource` reads a converted folder for ``make_dataset(..., tfrecord_dir=...)``
(or ``data.tfrecord_dir``): shard k yields its images in file order, which is all the
shared epoch order (``data_generator.epoch_examples``) needs, so the batches equal the JSON
path's for the same seed when the shards are those ``shard_starts`` makes by default.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from strongpose import cli
from strongpose.files import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf
    from strongpose.data_generator import PreparedSet

META_FILE = "meta.json"
FORMAT_VERSION = 1


def shard_name(k: int, count: int) -> str:
    """File name of shard ``k`` of ``count``."""
    return f"shard-{k:05d}-of-{count:05d}.tfrecord"


# ------------------------------------------------------------------ writing
def _example(prepared: "PreparedSet", index: int, image_bytes: bytes, label_bytes: bytes) -> bytes:
    import tensorflow as tf

    s, n = int(prepared.starts[index]), int(prepared.counts[index])
    feature = tf.train.Feature
    values = {
        "image": feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        "label": feature(bytes_list=tf.train.BytesList(value=[label_bytes])),
        "keypoints": feature(float_list=tf.train.FloatList(
            value=prepared.keypoints[s:s + n].reshape(-1).tolist())),
        "has_mask": feature(int64_list=tf.train.Int64List(
            value=prepared.has_mask[s:s + n].astype(np.int64).tolist())),
        "num_people": feature(int64_list=tf.train.Int64List(value=[n])),
        "image_id": feature(int64_list=tf.train.Int64List(value=[int(prepared.image_ids[index])])),
        "height": feature(int64_list=tf.train.Int64List(value=[int(prepared.heights[index])])),
        "width": feature(int64_list=tf.train.Int64List(value=[int(prepared.widths[index])])),
    }
    return tf.train.Example(features=tf.train.Features(feature=values)).SerializeToString()


def write_tfrecords(prepared: "PreparedSet", out_dir: str | os.PathLike, *,
                    shards: Optional[int] = None, split: str = "train",
                    progress: bool = True) -> dict:
    """Write ``prepared`` as sharded TFRecords in ``out_dir``; returns the meta dict.

    Every shard is written with :func:`strongpose.files.atomic_write` (a temporary file
    renamed when complete); ``meta.json`` is written last, the same way, so a folder with
    a ``meta.json`` is whole.
    """
    import tensorflow as tf
    from strongpose.data_generator import shard_starts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    starts = shard_starts(len(prepared), shards)
    count = len(starts) - 1
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(prepared), desc=f"writing {count} shard(s) to {out}", unit="img")
    names = []
    for k in range(count):
        name = shard_name(k, count)

        def write_shard(tmp: Path, first: int = int(starts[k]), end: int = int(starts[k + 1])) -> None:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for i in range(first, end):
                    image = (prepared.image_dir / str(prepared.file_names[i])).read_bytes()
                    label = (prepared.label_path(prepared.image_ids[i]).read_bytes()
                             if prepared.label[i] else b"")
                    writer.write(_example(prepared, i, image, label))
                    if bar is not None:
                        bar.update(1)

        atomic_write(out / name, write_shard)
        names.append(name)
    if bar is not None:
        bar.close()
    meta = {"version": FORMAT_VERSION, "split": split, "shards": names,
            "shard_starts": [int(v) for v in starts], "images": len(prepared),
            "people": int(prepared.counts.sum()), "max_people": int(prepared.max_people),
            "keypoints": int(prepared.keypoints.shape[1]),
            "counts": [int(v) for v in prepared.counts], "skipped": list(prepared.skipped)}
    atomic_write(out / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return meta


# ------------------------------------------------------------------ reading
class TFRecordSource:
    """A converted folder as a ``make_dataset`` source: its shards, counts and parsing."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{str(self.root)!r} holds no {META_FILE}: not a TFRecord folder "
                                    "written by `python -m strongpose.tfrecords` (or unfinished)")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format version {meta.get('version')}, this reader "
                             f"reads {FORMAT_VERSION}: convert again")
        self.meta = meta
        self.split = str(meta["split"])
        self.files = [str(self.root / name) for name in meta["shards"]]
        missing = [f for f in self.files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.root}: shard {missing[0]!r} is missing "
                                    f"({len(missing)} of {len(self.files)})")
        self.shard_starts = np.asarray(meta["shard_starts"], np.int64)
        self.counts = np.asarray(meta["counts"], np.int32)
        self.max_people = int(meta["max_people"])
        self.num_keypoints = int(meta["keypoints"])
        self.skipped = list(meta.get("skipped", []))

    def __len__(self) -> int:
        return int(self.meta["images"])

    def check(self, max_people: int, num_keypoints: int) -> None:
        """ValueError unless converted with the config's ``max_people`` and K."""
        if (max_people, num_keypoints) != (self.max_people, self.num_keypoints):
            raise ValueError(
                f"{self.root}: converted with codec.max_people={self.max_people} and "
                f"{self.num_keypoints} keypoints, the config has {max_people} and "
                f"{num_keypoints}: convert again with this config")

    def records(self, shards: "tf.Tensor") -> "tf.data.Dataset":
        """The serialized examples of ``shards`` (int64 indices), one shard after the
        other, each in file order."""
        import tensorflow as tf

        return tf.data.TFRecordDataset(tf.gather(tf.constant(self.files), shards),
                                       num_parallel_reads=None, buffer_size=8 << 20)

    def parse(self, record: "tf.Tensor") -> dict:
        """One serialized example -> raw example (people padded to ``max_people``)."""
        import tensorflow as tf

        p, k = self.max_people, self.num_keypoints
        spec = {"image": tf.io.FixedLenFeature([], tf.string),
                "label": tf.io.FixedLenFeature([], tf.string),
                "keypoints": tf.io.VarLenFeature(tf.float32),
                "has_mask": tf.io.VarLenFeature(tf.int64),
                "num_people": tf.io.FixedLenFeature([], tf.int64),
                "image_id": tf.io.FixedLenFeature([], tf.int64),
                "height": tf.io.FixedLenFeature([], tf.int64),
                "width": tf.io.FixedLenFeature([], tf.int64)}
        ex = tf.io.parse_single_example(record, spec)
        n = tf.cast(ex["num_people"], tf.int32)
        kp = tf.reshape(tf.sparse.to_dense(ex["keypoints"]), [n, k, 3])
        has_mask = tf.cast(tf.sparse.to_dense(ex["has_mask"]), tf.bool)
        pad = p - n
        return {"image": ex["image"], "label": ex["label"],
                "size": tf.cast(tf.stack([ex["height"], ex["width"]]), tf.int32),
                "num_people": tf.minimum(n, p),
                "keypoints": tf.ensure_shape(tf.pad(kp, [[0, pad], [0, 0], [0, 0]]), [p, k, 3]),
                "has_mask": tf.ensure_shape(tf.pad(has_mask, [[0, pad]]), [p]),
                "image_id": ex["image_id"]}


# ------------------------------------------------------------------ command line
def _resolve(data: str, split: str, images: Optional[str]) -> tuple[Path, Path]:
    """(annotation file, image folder) of a data root or a keypoints JSON."""
    path = Path(data)
    if path.suffix == ".json":
        return path, Path(images) if images else path.parent.parent / split
    return path / "annotations" / f"person_keypoints_{split}.json", \
        Path(images) if images else path / split


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = cli.ArgumentParser(
        prog="python -m strongpose.tfrecords",
        description="Convert a COCO keypoints split to sharded TFRecords for make_dataset.")
    parser.add_argument("data", help="a data root (annotations/person_keypoints_SPLIT.json and "
                        "SPLIT/ inside) or a keypoints JSON")
    parser.add_argument("out_dir", help="folder for the shards and meta.json")
    parser.add_argument("--split", default="train2017",
                        help="split name (default train2017; with a JSON: its image folder "
                             "is ../SPLIT beside annotations/ unless --images)")
    parser.add_argument("--images", default=None, help="image folder (overrides the default)")
    parser.add_argument("--shards", type=int, default=None,
                        help="shard count (default: one per 1024 images, which the JSON "
                             "path's order assumes)")
    parser.add_argument("--config", default="personlab",
                        help="preset whose skeleton and codec.max_people to use")
    parser.add_argument("--cache", default=None,
                        help="preparation cache (default OUT_DIR/.prepare_cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_intermixed_args(argv)
    if args.shards is not None and args.shards < 1:
        parser.error(f"--shards must be >= 1, got {args.shards}")
    cli.import_tensorflow()
    from strongpose.config import load_config
    from strongpose.data_generator import prepare

    cfg = load_config(args.config, list(args.overrides))
    ann, images = _resolve(args.data, args.split, args.images)
    out = Path(args.out_dir)
    prepared = prepare(ann, images, args.cache or out / ".prepare_cache", skeleton=cfg.skeleton,
                       max_people=int(cfg.codec.max_people), progress=not args.quiet)
    meta = write_tfrecords(prepared, out, shards=args.shards, split=args.split,
                           progress=not args.quiet)
    print(f"{meta['images']} images, {meta['people']} people in {len(meta['shards'])} shard(s) "
          f"in {out}; {len(meta['skipped'])} image(s) skipped"
          + "".join(f"\n  skipped {line}" for line in meta["skipped"]))
    return meta


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m strongpose.tfrecords"))
