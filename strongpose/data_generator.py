"""COCO keypoints (JSON + image folder) -> augmented ``tf.data`` batches ``(images, targets)``.

    ds = make_dataset(cfg, "train2017", cache_dir="runs/x/data_cache")         # a config split
    ds = make_dataset(cfg, "ann/person_keypoints_train.json", "images/train", "cache",
                      seed=0, batch_size=8)
    for images, targets in ds: ...        # images (B, S, S, 3) float32 0..255; targets: the
                                          # MAPS.md maps and *_weight, (B, h, w, C) float32

Two stages:

1. :func:`prepare` (NumPy + pycocotools, once per annotation file, cached on disk): per
   image a label PNG of 3 uint8 channels at the image's size (0: instance map, person j
   as j + 1, later people drawn over earlier ones; 1: crowd mask; 2: unannotated mask,
   i.e. people with a mask but no labelled keypoint and people beyond ``max_people``),
   written only for images with any of these; and one ``people.npz`` holding every kept
   image's id, file name, size and its annotated people (keypoints, has_mask) unpadded.
   Images that are missing, unreadable (decoded once, whole) or of another size than the JSON says
   are skipped with a warning and counted (``PreparedSet.skipped``). Cache layout::

       cache_dir/<json stem>-<sha1 of JSON + image dir + P + K>/
           meta.json          source, counts, skipped files
           people.npz         image_ids, file_names, heights, widths, label (0/1),
                              starts, counts (rows of keypoints per image),
                              keypoints (N_people, K, 3) float32, has_mask (N_people,)
           labels/<image_id>.png

2. :func:`make_dataset`: TensorFlow ops only (no ``py_function``): per epoch a stateless
   permutation of the images (training), images without annotated people kept at
   ``empty_image_rate``, then a deterministic parallel map (read + decode the image and
   label PNG, pad people to P = ``codec.max_people``, :class:`Augmenter` with the stateless
   seed ``(seed, epoch * N + position)``, :class:`TargetEncoder` on the example's people
   present (:func:`present_people`: the padding rows add nothing but cost), batch,
   prefetch. The same seed gives the same batches.

``with_targets=False`` yields ``(images, inputs)`` instead, ``inputs`` being the MAPS.md
"Targets input" with every mask at map size (factor 1), for encoding inside the train step.
Person masks are always cut at ``mask_factor = output stride`` (the encoder reads only every
s-th pixel, so the maps are the same as at full size, for 1/s^2 of the memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf
    from strongpose.config import Config

CACHE_VERSION = 2                   # 2: images decoded whole at preparation
DEFAULT_EMPTY_IMAGE_RATE = 0.1      # share of images without annotated people kept in training
EVAL_SPLIT_WORDS = ("val", "test")


class DataError(ValueError):
    """A data set that cannot be used: empty, all images skipped, or refused."""


@dataclass
class PreparedSet:
    """A prepared annotation file: the arrays of ``people.npz`` and where the files lie."""

    root: Path
    image_dir: Path
    image_ids: np.ndarray
    file_names: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    label: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    keypoints: np.ndarray
    has_mask: np.ndarray
    max_people: int
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def label_path(self, image_id: int) -> Path:
        return self.root / "labels" / f"{int(image_id)}.png"

    def padded_people(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Keypoints (P, K, 3), num_people, has_mask (P,) of image ``index``."""
        s, n = int(self.starts[index]), int(self.counts[index])
        kp = np.zeros((self.max_people,) + self.keypoints.shape[1:], np.float32)
        hm = np.zeros((self.max_people,), bool)
        kp[:n], hm[:n] = self.keypoints[s:s + n], self.has_mask[s:s + n]
        return kp, n, hm


# -------------------------------------------------------------------- preparation
def _cache_key(annotation_file: Path, image_dir: Path, max_people: int, k: int) -> str:
    h = hashlib.sha1()
    with open(annotation_file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    h.update(f"|{image_dir.resolve()}|{max_people}|{k}|{CACHE_VERSION}".encode())
    return h.hexdigest()[:16]


def _check_image(path: Path, height: int, width: int) -> Optional[str]:
    """None if the file decodes whole as an image of (height, width), else why not (a
    truncated file would otherwise stop tf.data in the middle of training)."""
    from PIL import Image
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            im.load()                        # the whole file: truncated data raises here
    except Exception as exc:  # PIL raises several types for unreadable files
        return f"unreadable ({type(exc).__name__})"
    if fmt not in ("JPEG", "PNG", "GIF", "BMP"):
        return f"format {fmt} (TensorFlow decodes JPEG, PNG, GIF, BMP)"
    if size != (width, height):
        return f"size {size[0]}x{size[1]}, the annotations say {width}x{height}"
    return None


def prepare(annotation_file: str | os.PathLike, image_dir: str | os.PathLike,
            cache_dir: str | os.PathLike, *, skeleton: Any, max_people: int,
            progress: bool = True) -> PreparedSet:
    """Prepare (or load from ``cache_dir``) one COCO keypoints file; see the module docstring.

    Raises:
        FileNotFoundError: no annotation file or no image folder.
        CocoFormatError (a ValueError): the file is not COCO keypoints (the message names it).
        DataError: no image left (empty file, or every image skipped).
    """
    from strongpose.coco import CocoFormatError, CocoKeypoints
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {str(image_dir)!r} does not exist")
    if not annotation_file.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(annotation_file)!r} does not exist")
    k = skeleton.num_keypoints
    root = Path(cache_dir) / f"{annotation_file.stem}-{_cache_key(annotation_file, image_dir, max_people, k)}"
    if (root / "meta.json").is_file() and (root / "people.npz").is_file():
        return _load(root, image_dir, max_people)
    try:
        coco = CocoKeypoints(annotation_file, image_dir=image_dir)
    except CocoFormatError as exc:
        msg = str(exc)
        raise CocoFormatError(msg if str(annotation_file) in msg else
                              f"{annotation_file}: not a COCO keypoints file: {msg}") from exc
    ids = coco.image_ids
    if not ids:
        raise DataError(f"{annotation_file}: the data set is empty (no images)")
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    (tmp / "labels").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {key: [] for key in ("image_ids", "file_names", "heights", "widths",
                                                 "label", "counts")}
    kps, has_masks, skipped = [], [], []
    bar = ids
    if progress:
        from tqdm import tqdm
        bar = tqdm(ids, desc=f"preparing {annotation_file.name}", unit="img")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # coco's once-per-file max_people note
        for image_id in bar:
            info = coco.image_info(image_id)
            path = coco.image_path(image_id)
            why = _check_image(path, int(info["height"]), int(info["width"]))
            if why is not None:
                skipped.append(f"{path}: {why}")
                continue
            gt = coco.ground_truth(image_id, skeleton, max_people)
            n = gt.num_people
            labels = np.zeros(gt.crowd_mask.shape + (3,), np.uint8)
            for j in range(n):                            # later people over earlier ones
                labels[..., 0][gt.person_masks[j] > 0] = j + 1
            labels[..., 1], labels[..., 2] = gt.crowd_mask, gt.unannotated_mask
            has_label = bool(labels.any())
            if has_label:
                cv2.imwrite(str(tmp / "labels" / f"{int(image_id)}.png"), labels[..., ::-1])
            for key, value in (("image_ids", int(image_id)), ("file_names", info["file_name"]),
                               ("heights", gt.image_size[0]), ("widths", gt.image_size[1]),
                               ("label", has_label), ("counts", n)):
                rows[key].append(value)
            kps.append(gt.keypoints[:n])
            has_masks.append(gt.has_mask[:n])
    for line in skipped:
        warnings.warn(f"skipping image {line}", stacklevel=2)
    if not rows["image_ids"]:
        raise DataError(f"{annotation_file}: no usable image in {image_dir} "
                        f"({len(skipped)} of {len(ids)} skipped: missing or unreadable)")
    counts = np.asarray(rows["counts"], np.int32)
    np.savez(tmp / "people.npz", image_ids=np.asarray(rows["image_ids"], np.int64),
             file_names=np.asarray(rows["file_names"], str),
             heights=np.asarray(rows["heights"], np.int32), widths=np.asarray(rows["widths"], np.int32),
             label=np.asarray(rows["label"], bool), counts=counts,
             starts=(np.cumsum(counts) - counts).astype(np.int64),
             keypoints=np.concatenate(kps).astype(np.float32).reshape(-1, k, 3),
             has_mask=np.concatenate(has_masks).astype(bool))
    meta = {"version": CACHE_VERSION, "annotation_file": str(annotation_file.resolve()),
            "image_dir": str(image_dir.resolve()), "max_people": max_people, "keypoints": k,
            "images": len(rows["image_ids"]), "people": int(counts.sum()), "skipped": skipped}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(root)
    except OSError:       # prepared meanwhile by another process: use that one
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return _load(root, image_dir, max_people)


def _load(root: Path, image_dir: Path, max_people: int) -> PreparedSet:
    with np.load(root / "people.npz") as z:
        arrays = {key: z[key] for key in z.files}
    meta = json.loads((root / "meta.json").read_text())
    return PreparedSet(root=root, image_dir=image_dir, max_people=max_people,
                       skipped=list(meta.get("skipped", [])), **arrays)


# ------------------------------------------------------------------------ dataset
def resolve_split(cfg: "Config", split_or_annotation_file: str | os.PathLike,
                  image_dir: Optional[str | os.PathLike]) -> tuple[str, Path, Path]:
    """(split name, annotation file, image folder) of a config split or a JSON path."""
    text = str(split_or_annotation_file)
    if text.endswith(".json") or os.sep in text or "/" in text:
        ann = Path(text)
        if image_dir is None:
            raise ValueError(f"make_dataset: an annotation file ({text}) needs image_dir")
        return ann.stem, ann, Path(image_dir)
    root = Path(cfg.data.coco_root)
    ann = root / cfg.data.annotation_pattern.format(split=text)
    return text, ann, Path(image_dir) if image_dir is not None else root / text


def present_people(inputs: dict) -> dict:
    """Target inputs of one example cut to its people present (at least one row): the
    encoder's cost grows with the rows, and padding rows (v = 0) add nothing to the targets."""
    import tensorflow as tf

    m = tf.maximum(tf.cast(inputs["num_people"], tf.int32), 1)
    return {**inputs, "keypoints": inputs["keypoints"][:m], "person_masks": inputs["person_masks"][:m],
            "has_mask": inputs["has_mask"][:m]}


def _stream_start(start: int, n_images: int, rate: float, epoch_indices: Any) -> tuple[int, int]:
    """(first epoch, examples to drop from it) to begin the stream at example ``start``:
    arithmetic when every image is kept, else ``epoch_indices``' sizes counted in chunks of
    epochs (index arithmetic only: no image is read)."""
    import tensorflow as tf
    if start < 0:
        raise ValueError(f"make_dataset: start must be >= 0, got {start}")
    if start == 0 or rate >= 1.0:
        return divmod(start, n_images)
    chunk = max(1, min(1024, (1 << 20) // n_images))     # epochs counted per call

    @tf.function
    def kept(e0):
        return tf.map_fn(lambda e: tf.size(epoch_indices(e)[0], out_type=tf.int64),
                         e0 + tf.range(chunk, dtype=tf.int64), fn_output_signature=tf.int64)

    e0 = 0
    while True:
        total = np.cumsum(kept(tf.constant(e0, tf.int64)).numpy())
        j = int(np.searchsorted(total, start, side="right"))   # first epoch ending past start
        if j < chunk:
            return e0 + j, start - (int(total[j - 1]) if j else 0)
        start, e0 = start - int(total[-1]), e0 + chunk


def make_dataset(cfg: "Config", split_or_annotation_file: str | os.PathLike,
                 image_dir: Optional[str | os.PathLike] = None,
                 cache_dir: Optional[str | os.PathLike] = None, *, training: bool = True,
                 seed: int = 0, batch_size: Optional[int] = None, augment: bool = True,
                 with_targets: bool = True, empty_image_rate: Optional[float] = None,
                 allow_eval_split: bool = False, progress: bool = True,
                 prepared: Optional[PreparedSet] = None, start: int = 0) -> "tf.data.Dataset":
    """Batches ``(images, targets)`` of a COCO keypoints split (see the module docstring).

    Args:
        cfg: the config (skeleton, model.input_size, output_stride, codec, data ranges).
        split_or_annotation_file: a split name of the config (``cfg.data.coco_root`` and
            ``annotation_pattern``) or the path of a keypoints JSON.
        image_dir: the images (default for a split: ``coco_root/<split>``).
        cache_dir: where :func:`prepare` caches (default ``<train.output_dir>/data_cache``).
        training: shuffle every epoch, repeat forever, drop the last partial batch;
            False: one pass in file order, every image, the last batch kept.
        seed: same seed, same batches (order, augmentation, kept empty images).
        batch_size: default ``cfg.train.batch_size``.
        augment: False: identity mode (fit and centre; no jitter, flip or rotation).
        with_targets: False: ``(images, target inputs)`` for encoding in the train step.
        empty_image_rate: share of images without annotated people kept per epoch; default
            0.1 when training (not a config key yet), 1 otherwise.
        allow_eval_split: train on a split whose name holds "val" or "test".
        prepared: an already prepared set (skips :func:`prepare`).
        start: begin at this example of the stream (a resumed run: steps done x batch
            size), found by counting per epoch, without reading the skipped examples.
    """
    import tensorflow as tf
    from strongpose.augment import Augmenter
    from strongpose.targets import TargetEncoder

    name, ann, images = resolve_split(cfg, split_or_annotation_file, image_dir)
    if training and not allow_eval_split and any(w in name.lower() for w in EVAL_SPLIT_WORDS):
        raise DataError(f"make_dataset: refusing to train on {name!r} (an evaluation split); "
                        "pass allow_eval_split=True if that is meant")
    if prepared is None:
        if cache_dir is None:
            cache_dir = Path(cfg.train.output_dir) / "data_cache"
        prepared = prepare(ann, images, cache_dir, skeleton=cfg.skeleton,
                           max_people=int(cfg.codec.max_people), progress=progress)
    rate = (DEFAULT_EMPTY_IMAGE_RATE if training else 1.0) if empty_image_rate is None \
        else float(empty_image_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"make_dataset: empty_image_rate must be in [0, 1], got {rate}")
    if training and rate == 0.0 and not np.any(prepared.counts > 0):
        raise DataError(f"{ann}: no image holds an annotated person (and empty_image_rate is 0)")
    batch = int(batch_size if batch_size is not None else cfg.train.batch_size)
    if batch < 1:
        raise ValueError(f"make_dataset: batch_size must be >= 1, got {batch}")

    stride = int(cfg.model.output_stride)
    size = int(cfg.model.input_size)
    augmenter = Augmenter.from_config(cfg, augment=augment, mask_factor=stride, masks_on_grid=True)
    encoder = TargetEncoder.from_config(cfg)
    map_size = encoder.map_size_for((size, size))
    p, k = int(cfg.codec.max_people), cfg.skeleton.num_keypoints
    n_images = len(prepared)

    image_paths = tf.constant([str(images / f) for f in prepared.file_names])
    label_paths = tf.constant([str(prepared.label_path(i)) if lab else ""
                               for i, lab in zip(prepared.image_ids, prepared.label)])
    hw = tf.constant(np.stack([prepared.heights, prepared.widths], -1), tf.int32)
    starts = tf.constant(prepared.starts, tf.int64)
    counts = tf.constant(prepared.counts, tf.int32)
    kp_all = tf.constant(np.concatenate([prepared.keypoints, np.zeros((1, k, 3), np.float32)]))
    hm_all = tf.constant(np.concatenate([prepared.has_mask, np.zeros((1,), bool)]))
    ids = tf.constant(prepared.image_ids, tf.int64)

    def epoch_indices(e: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(image index, stream position) of epoch ``e``'s examples, in order."""
        order = tf.range(n_images, dtype=tf.int64)
        if training:
            order = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([tf.constant(seed, tf.int64), e]))
        position = e * n_images + tf.range(n_images, dtype=tf.int64)
        if rate < 1.0:   # one draw per slot: images without people kept at `rate`
            u = tf.random.stateless_uniform([n_images], tf.stack([tf.constant(seed + 7919, tf.int64), e]))
            keep = (tf.gather(counts, order) > 0) | (u < rate)
            order, position = tf.boolean_mask(order, keep), tf.boolean_mask(position, keep)
        return order, position

    first_epoch, skip = _stream_start(int(start), n_images, rate, epoch_indices)

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        order, position = epoch_indices(e)
        s = tf.where(e == first_epoch, tf.constant(skip, tf.int64), 0)   # resumed mid-epoch
        return tf.data.Dataset.from_tensor_slices((order[s:], position[s:]))

    def load(i: tf.Tensor, pos: tf.Tensor) -> dict[str, tf.Tensor]:
        image = tf.io.decode_image(tf.io.read_file(tf.gather(image_paths, i)), channels=3,
                                   expand_animations=False)
        shape = tf.gather(hw, i)
        label_path = tf.gather(label_paths, i)
        labels = tf.cond(tf.strings.length(label_path) > 0,
                         lambda: tf.io.decode_png(tf.io.read_file(label_path), channels=3),
                         lambda: tf.zeros(tf.concat([shape, [3]], 0), tf.uint8))
        n = tf.minimum(tf.gather(counts, i), p)
        rows = tf.gather(starts, i) + tf.range(p, dtype=tf.int64)
        rows = tf.where(tf.range(p) < n, rows, tf.cast(tf.shape(kp_all)[0] - 1, tf.int64))
        example = {"image": image, "instance_map": labels[..., 0], "crowd_mask": labels[..., 1],
                   "unannotated_mask": labels[..., 2],
                   "keypoints": tf.ensure_shape(tf.gather(kp_all, rows), [p, k, 3]),
                   "num_people": n, "has_mask": tf.ensure_shape(tf.gather(hm_all, rows), [p]),
                   "image_id": tf.gather(ids, i)}
        out = augmenter(example, tf.stack([tf.constant(seed, tf.int64), pos]))
        inputs = {"keypoints": out["keypoints"], "num_people": out["num_people"],
                  "person_masks": out["person_masks"], "has_mask": out["has_mask"],
                  "crowd_mask": out["crowd_mask"], "unannotated_mask": out["unannotated_mask"]}
        if with_targets:
            return out["image"], encoder(present_people(inputs), map_size)
        return out["image"], inputs

    epochs = tf.data.Dataset.range(first_epoch, tf.int64.max if training else 1)
    ds = epochs.flat_map(epoch)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
