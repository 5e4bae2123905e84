"""COCO keypoints (JSON + image folder) -> augmented ``tf.data`` batches ``(images, targets)``.

    ds = make_dataset(cfg, "train2017", cache_dir="runs/x/data_cache")         # a config split
    ds = make_dataset(cfg, "ann/person_keypoints_train.json", "images/train", "cache",
                      seed=0, batch_size=8)
    for images, targets in ds: ...        # images (B, S, S, 3) float32 0..255; targets: the
                                          # MAPS.md maps and *_weight, (B, h, w, C) float32

    ds = make_dataset(cfg, "train2017", tfrecord_dir="tfrecords/train")      # TFRecord shards

Two stages:

1. :func:`prepare` (NumPy + pycocotools, once per annotation file, cached on disk): per
   image a one-channel label PNG at the image's size (:func:`label_layout`: person j's
   mask as j + 1 in the low bits, later people drawn over earlier ones; a crowd bit; an
   unannotated bit, i.e. people with a mask but no labelled keypoint and people beyond
   ``max_people``), written only for images with any of these; and one ``people.npz``
   holding every kept image's id, file name, size and its annotated people (keypoints,
   has_mask) unpadded. Images that are missing, unreadable (decoded once, whole) or of
   another size than the JSON says are skipped with a warning and counted
   (``PreparedSet.skipped``). Cache layout::

       cache_dir/<json stem>-<sha1 of JSON + image dir + P + K + version>/
           meta.json          source, counts, skipped files
           people.npz         image_ids, file_names, heights, widths, label (0/1),
                              starts, counts (rows of keypoints per image),
                              keypoints (N_people, K, 3) float32, has_mask (N_people,)
           labels/<image_id>.png

   ``python -m strongpose.tfrecords`` writes the same into sharded TFRecords
   (:mod:`strongpose.tfrecords`).

2. :func:`make_dataset`: TensorFlow ops only (no ``py_function``). A source (the prepared
   JSON set, or :class:`strongpose.tfrecords.TFRecordSource`) is a list of shards of
   contiguous images (:func:`shard_starts`); :func:`epoch_examples` gives every epoch's
   order from the shards alone, by index arithmetic (training: stateless shard
   permutation, shards read in turn, stateless permutation of every run of
   ``data.shuffle_buffer`` slots), so both sources give the same batches for the same
   seed. Then images without annotated
   people kept at ``empty_image_rate``, a deterministic parallel map
   (:func:`example_pipeline`: decode the image and the label PNG, :class:`Augmenter`
   with the stateless seed ``(seed, epoch * N + position)``, masks warped straight onto
   the map grid and unpacked there, :class:`TargetEncoder` on the example's people
   present (:func:`present_people`: the padding rows add nothing but cost)), batch,
   prefetch.

``with_targets=False`` yields ``(images, inputs)`` instead, ``inputs`` being the MAPS.md
"Targets input" with every mask at map size (factor 1), for encoding inside the train step
(:class:`TrainStepTargets`, which ``training.TrainingModel(target_encoder=...)`` calls on
``y``; :func:`targets_in_train_step` says where ``train`` encodes by default).
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

CACHE_VERSION = 3                   # 2: images decoded whole at preparation; 3: packed labels
DEFAULT_EMPTY_IMAGE_RATE = 0.1      # share of images without annotated people kept in training
EVAL_SPLIT_WORDS = ("val", "test")
IMAGES_PER_SHARD = 1024             # default shard size (TFRecords; the JSON path's order too)


class DataError(ValueError):
    """A data set that cannot be used: empty, all images skipped, or refused."""


# ------------------------------------------------------------------ label maps
def label_layout(max_people: int) -> tuple[str, int, int]:
    """(dtype, crowd bit, unannotated bit) of the one-channel label PNG for ``max_people``.

    The label value of a pixel is ``instance | crowd << c | unannotated << u``, ``instance``
    being person j's ``j + 1`` (0: none): uint8 with bits 6 and 7 up to 63 people, else
    uint16 with bits 14 and 15. One channel decodes and warps at a third of three's cost.
    """
    if max_people < 64:
        return "uint8", 6, 7
    if max_people < 1 << 14:
        return "uint16", 14, 15
    raise ValueError(f"codec.max_people must be below {1 << 14}, got {max_people}")


def pack_labels(instance: np.ndarray, crowd: np.ndarray, unannotated: np.ndarray,
                max_people: int) -> np.ndarray:
    """(H, W) instance ids and two 0/1 masks -> the (H, W) packed label map (NumPy)."""
    dtype, c, u = label_layout(max_people)
    packed = (instance.astype(np.uint32) | (crowd.astype(np.uint32) > 0) << c
              | (unannotated.astype(np.uint32) > 0) << u)
    return packed.astype(dtype)


def unpack_labels(packed: "tf.Tensor", max_people: int
                  ) -> tuple["tf.Tensor", "tf.Tensor", "tf.Tensor"]:
    """Packed label map (any integer dtype) -> instance ids (int32), crowd, unannotated
    (uint8 0/1); TensorFlow ops."""
    import tensorflow as tf

    _, c, u = label_layout(max_people)
    x = tf.cast(packed, tf.int32)
    bit = lambda b: tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(x, b), 1), tf.uint8)  # noqa: E731
    return tf.bitwise.bitwise_and(x, (1 << c) - 1), bit(c), bit(u)


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
            instance = np.zeros(gt.crowd_mask.shape, np.uint32)
            for j in range(n):                            # later people over earlier ones
                instance[gt.person_masks[j] > 0] = j + 1
            labels = pack_labels(instance, gt.crowd_mask, gt.unannotated_mask, max_people)
            has_label = bool(labels.any())
            if has_label:
                cv2.imwrite(str(tmp / "labels" / f"{int(image_id)}.png"), labels)
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


def shard_starts(n_images: int, shards: Optional[int] = None) -> np.ndarray:
    """(N + 1,) first image index of each of N shards (and n_images): contiguous runs in
    file order, sizes differing by at most one. N defaults to ceil(n / IMAGES_PER_SHARD)."""
    n = int(n_images)
    count = max(1, -(-n // IMAGES_PER_SHARD)) if shards is None else int(shards)
    if count < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    count = min(count, max(n, 1))
    return (np.arange(count + 1, dtype=np.int64) * n) // count


def _epoch_key(seed: int, epoch: "tf.Tensor") -> "tf.Tensor":
    import tensorflow as tf
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


def shard_order(n_shards: int, epoch: "tf.Tensor", *, seed: int, training: bool) -> "tf.Tensor":
    """(N,) int64 shards in the order epoch ``epoch`` reads them: a stateless permutation
    when training, else in file order."""
    import tensorflow as tf

    shards = tf.range(n_shards, dtype=tf.int64)
    if not training:
        return shards
    return tf.random.experimental.stateless_shuffle(
        shards, seed=tf.random.experimental.stateless_fold_in(_epoch_key(seed, epoch), 1))


def window_keys(n_images: int, epoch: "tf.Tensor", *, seed: int) -> "tf.Tensor":
    """(n,) float64 sort keys of epoch ``epoch``'s stream slots in [0, 1): each run of
    ``window`` slots is put in the order of its keys (stable argsort)."""
    import tensorflow as tf

    return tf.random.stateless_uniform(
        [n_images], tf.random.experimental.stateless_fold_in(_epoch_key(seed, epoch), 2),
        dtype=tf.float64)


def epoch_examples(starts: np.ndarray, counts: "tf.Tensor", epoch: "tf.Tensor", *, seed: int,
                   training: bool, window: int, rate: float
                   ) -> tuple["tf.Tensor", "tf.Tensor", "tf.Tensor"]:
    """Epoch ``epoch`` of any source of shards ``starts`` (:func:`shard_starts`), as index
    arithmetic (no image read): ``(order, position, keep)``, each (n,).

    Training: the shards in :func:`shard_order`, read one after the other in file order,
    then every run of ``window`` slots permuted by :func:`window_keys`; otherwise file
    order. ``position = epoch * n + slot`` (the augmentation's seed); ``keep``: the image
    has annotated people, or a stateless draw per slot below ``rate``. A TFRecord source
    reads its records in the same order (:func:`windowed`), so both sources agree.
    """
    import tensorflow as tf

    n_images = int(starts[-1])
    bounds = tf.constant(starts, tf.int64)
    shards = shard_order(len(starts) - 1, epoch, seed=seed, training=training)
    order = tf.ragged.range(tf.gather(bounds, shards), tf.gather(bounds, shards + 1)).flat_values
    if training:
        slot = tf.range(n_images, dtype=tf.int64)
        key = tf.cast(slot // window, tf.float64) + window_keys(n_images, epoch, seed=seed)
        order = tf.gather(order, tf.argsort(key, stable=True))
    position = tf.cast(epoch, tf.int64) * n_images + tf.range(n_images, dtype=tf.int64)
    keep = tf.ones([n_images], tf.bool)
    if rate < 1.0:
        u = tf.random.stateless_uniform([n_images], tf.stack([tf.constant(seed + 7919, tf.int64),
                                                              tf.cast(epoch, tf.int64)]))
        keep = (tf.gather(counts, order) > 0) | (u < rate)
    return order, position, keep


def windowed(records: "tf.data.Dataset", n_images: int, epoch: "tf.Tensor", *, seed: int,
             window: int) -> "tf.data.Dataset":
    """A stream of one epoch's elements in shard order -> the training order of
    :func:`epoch_examples` (each run of ``window`` permuted by :func:`window_keys`)."""
    import tensorflow as tf

    keys = window_keys(n_images, epoch, seed=seed)

    def permute(w: tf.Tensor, block: Any) -> Any:
        first = tf.nest.flatten(block)[0]
        own = keys[w * window: w * window + tf.cast(tf.shape(first)[0], tf.int64)]
        order = tf.argsort(own, stable=True)
        return tf.nest.map_structure(lambda t: tf.gather(t, order), block)

    return records.batch(window).enumerate().map(permute).unbatch()


class TrainStepTargets:
    """Batched target encoding for the train step: ``(B, ...)`` target inputs -> targets.

    With ``make_dataset(..., with_targets=False)`` the pipeline yields the MAPS.md target
    inputs; the training model calls this on ``y`` in its loss (TensorFlow backend: the
    encoder is TensorFlow ops), so the encoder runs on the accelerator and costs the host
    nothing. Rows beyond the batch's largest ``num_people`` are cut first (they add nothing).
    """

    def __init__(self, encoder: Any, map_size: tuple[int, int]) -> None:
        self.encoder = encoder
        self.map_size = (int(map_size[0]), int(map_size[1]))

    @classmethod
    def from_config(cls, cfg: "Config") -> "TrainStepTargets":
        """For ``cfg``'s training stride and ``model.input_size``."""
        from strongpose.targets import TargetEncoder
        encoder = TargetEncoder.from_config(cfg)
        size = int(cfg.model.input_size)
        return cls(encoder, encoder.map_size_for((size, size)))

    def __call__(self, inputs: dict) -> dict:
        import tensorflow as tf

        m = tf.maximum(tf.reduce_max(tf.cast(inputs["num_people"], tf.int32)), 1)
        cut = {**inputs, "keypoints": inputs["keypoints"][:, :m],
               "person_masks": inputs["person_masks"][:, :m], "has_mask": inputs["has_mask"][:, :m]}
        return self.encoder(cut, self.map_size)


def targets_in_train_step() -> bool:
    """Where the targets are encoded by default: in the train step where that takes work
    off the host (TensorFlow backend with a GPU), else in the pipeline (the JAX backend
    cannot run the TensorFlow encoder in its step; on a CPU alone both places cost the same
    cores, and the pipeline's per-image encoding of the people present is the cheaper)."""
    import keras
    import tensorflow as tf

    return keras.backend.backend() == "tensorflow" and bool(tf.config.list_logical_devices("GPU"))


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


def make_dataset(cfg: "Config", split_or_annotation_file: Optional[str | os.PathLike] = None,
                 image_dir: Optional[str | os.PathLike] = None,
                 cache_dir: Optional[str | os.PathLike] = None, *, training: bool = True,
                 seed: int = 0, batch_size: Optional[int] = None, augment: bool = True,
                 with_targets: bool = True, empty_image_rate: Optional[float] = None,
                 allow_eval_split: bool = False, progress: bool = True,
                 prepared: Optional[PreparedSet] = None,
                 tfrecord_dir: Optional[str | os.PathLike] = None,
                 start: int = 0) -> "tf.data.Dataset":
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
        augment: False: identity mode (fit, image at the top-left; no jitter, flip or rotation).
        with_targets: False: ``(images, target inputs)`` for encoding in the train step.
        empty_image_rate: share of images without annotated people kept per epoch; default
            0.1 when training (not a config key yet), 1 otherwise.
        allow_eval_split: train on a split whose name holds "val" or "test".
        prepared: an already prepared set (skips :func:`prepare`).
        tfrecord_dir: read the shards that ``python -m strongpose.tfrecords`` wrote there
            instead of the JSON and images (default ``cfg.data.tfrecord_dir``; the split
            argument then only names the split, for the val/test refusal). The same
            batches as the JSON path for the same seed (when converted with the default
            ``--shards``).
        start: begin at this example of the stream (a resumed run: steps done x batch
            size), found by counting per epoch, without reading the skipped examples.
    """
    import tensorflow as tf

    tfrecord_dir = tfrecord_dir if tfrecord_dir is not None else cfg.data.tfrecord_dir
    if tfrecord_dir is not None and prepared is None:
        from strongpose.tfrecords import TFRecordSource
        source: Any = TFRecordSource(tfrecord_dir)
        name = Path(str(split_or_annotation_file)).stem if split_or_annotation_file else source.split
        ann = source.root
    else:
        if split_or_annotation_file is None:
            raise ValueError("make_dataset: give a split or an annotation file (or a tfrecord_dir)")
        name, ann, images = resolve_split(cfg, split_or_annotation_file, image_dir)
        source = None
    names = name.lower() + ("|" + source.split.lower() if source is not None else "")
    if training and not allow_eval_split and any(w in names for w in EVAL_SPLIT_WORDS):
        raise DataError(f"make_dataset: refusing to train on {name!r} (an evaluation split); "
                        "pass allow_eval_split=True if that is meant")
    if source is None and prepared is None:
        if cache_dir is None:
            cache_dir = Path(cfg.train.output_dir) / "data_cache"
        prepared = prepare(ann, images, cache_dir, skeleton=cfg.skeleton,
                           max_people=int(cfg.codec.max_people), progress=progress)
    counts_np = source.counts if source is not None else prepared.counts
    rate = (DEFAULT_EMPTY_IMAGE_RATE if training else 1.0) if empty_image_rate is None \
        else float(empty_image_rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"make_dataset: empty_image_rate must be in [0, 1], got {rate}")
    if training and rate == 0.0 and not np.any(counts_np > 0):
        raise DataError(f"{ann}: no image holds an annotated person (and empty_image_rate is 0)")
    batch = int(batch_size if batch_size is not None else cfg.train.batch_size)
    if batch < 1:
        raise ValueError(f"make_dataset: batch_size must be >= 1, got {batch}")

    p = int(cfg.codec.max_people)
    if source is not None:
        source.check(p, cfg.skeleton.num_keypoints)
        n_images, starts_np = len(source), source.shard_starts
    else:
        n_images, starts_np = len(prepared), shard_starts(len(prepared))
        to_raw = _json_reader(prepared, images, p)
    example_fn = example_pipeline(cfg, augment=augment, with_targets=with_targets)
    window = max(1, int(cfg.data.shuffle_buffer))
    counts = tf.constant(counts_np, tf.int32)

    def epoch_indices(e: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(image index, stream position) of epoch ``e``'s kept examples, in order."""
        order, position, keep = epoch_examples(starts_np, counts, e, seed=seed,
                                               training=training, window=window, rate=rate)
        return tf.boolean_mask(order, keep), tf.boolean_mask(position, keep)

    first_epoch, skip = _stream_start(int(start), n_images, rate, epoch_indices)

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        s = tf.where(e == first_epoch, tf.constant(skip, tf.int64), 0)   # resumed mid-epoch
        if source is None:
            order, position = epoch_indices(e)
            return tf.data.Dataset.from_tensor_slices((order[s:], position[s:]))
        _, position, keep = epoch_examples(starts_np, counts, e, seed=seed,
                                           training=training, window=window, rate=rate)
        records = source.records(shard_order(len(starts_np) - 1, e, seed=seed, training=training))
        if training:
            records = windowed(records, n_images, e, seed=seed, window=window)
        ds = tf.data.Dataset.zip((records, tf.data.Dataset.from_tensor_slices((position, keep))))
        return ds.filter(lambda r, pk: pk[1]).map(lambda r, pk: (r, pk[0])).skip(s)

    def load(element: tf.Tensor, pos: tf.Tensor):
        raw = source.parse(element) if source is not None else to_raw(element)
        return example_fn(raw, tf.stack([tf.constant(seed, tf.int64), pos]))

    epochs = tf.data.Dataset.range(first_epoch, tf.int64.max if training else 1)
    ds = epochs.flat_map(epoch)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _json_reader(prepared: PreparedSet, images: Path, max_people: int):
    """``to_raw(i)``: image ``i`` of a prepared JSON set read into a raw example (see
    :func:`example_pipeline`)."""
    import tensorflow as tf

    k = prepared.keypoints.shape[1]
    image_paths = tf.constant([str(images / f) for f in prepared.file_names])
    label_paths = tf.constant([str(prepared.label_path(i)) if lab else ""
                               for i, lab in zip(prepared.image_ids, prepared.label)])
    hw = tf.constant(np.stack([prepared.heights, prepared.widths], -1), tf.int32)
    first = tf.constant(prepared.starts, tf.int64)
    counts = tf.constant(prepared.counts, tf.int32)
    kp_all = tf.constant(np.concatenate([prepared.keypoints, np.zeros((1, k, 3), np.float32)]))
    hm_all = tf.constant(np.concatenate([prepared.has_mask, np.zeros((1,), bool)]))
    ids = tf.constant(prepared.image_ids, tf.int64)

    def to_raw(i: tf.Tensor) -> dict[str, tf.Tensor]:
        label_path = tf.gather(label_paths, i)
        n = tf.minimum(tf.gather(counts, i), max_people)
        rows = tf.gather(first, i) + tf.range(max_people, dtype=tf.int64)
        rows = tf.where(tf.range(max_people) < n, rows, tf.cast(tf.shape(kp_all)[0] - 1, tf.int64))
        return {"image": tf.io.read_file(tf.gather(image_paths, i)),
                "label": tf.cond(tf.strings.length(label_path) > 0,
                                 lambda: tf.io.read_file(label_path), lambda: tf.constant(b"")),
                "size": tf.gather(hw, i), "num_people": n,
                "keypoints": tf.ensure_shape(tf.gather(kp_all, rows), [max_people, k, 3]),
                "has_mask": tf.ensure_shape(tf.gather(hm_all, rows), [max_people]),
                "image_id": tf.gather(ids, i)}

    return to_raw


def decode_image_bytes(data: "tf.Tensor") -> "tf.Tensor":
    """(H, W, 3) uint8 RGB of encoded image bytes, JPEG decoded exactly (the pixels OpenCV,
    PIL and so the Predictor see; TensorFlow's default JPEG decoding is up to 6 grey levels
    off), any other format by ``tf.io.decode_image``."""
    import tensorflow as tf

    return tf.cond(tf.io.is_jpeg(data),
                   lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                   lambda: tf.io.decode_image(data, channels=3, expand_animations=False))


def example_pipeline(cfg: "Config", *, augment: bool = True, with_targets: bool = True):
    """``fn(raw, seed) -> (image, targets or target inputs)`` for one example (TF ops).

    ``raw``: ``image`` (encoded bytes), ``label`` (packed label PNG bytes, or empty: no
    label), ``size`` (H, W) int32, ``keypoints`` (P, K, 3), ``num_people``, ``has_mask``
    (P,), ``image_id``. Decodes, augments (:class:`Augmenter`, masks warped straight onto
    the map grid) and, ``with_targets``, encodes the people present.
    """
    import tensorflow as tf
    from strongpose.augment import Augmenter, person_masks
    from strongpose.targets import TargetEncoder

    stride = int(cfg.model.output_stride)
    size = int(cfg.model.input_size)
    p = int(cfg.codec.max_people)
    label_dtype = tf.as_dtype(label_layout(p)[0])
    augmenter = Augmenter.from_config(cfg, augment=augment, mask_factor=stride,
                                      masks_on_grid=True, make_person_masks=False)
    encoder = TargetEncoder.from_config(cfg)
    map_size = encoder.map_size_for((size, size))

    def fn(raw: dict[str, tf.Tensor], seed: tf.Tensor):
        image = decode_image_bytes(raw["image"])
        labels = tf.cond(tf.strings.length(raw["label"]) > 0,
                         lambda: tf.io.decode_png(raw["label"], channels=1, dtype=label_dtype)[..., 0],
                         lambda: tf.zeros(raw["size"], label_dtype))
        example = {"image": image, "instance_map": labels, "keypoints": raw["keypoints"],
                   "num_people": raw["num_people"]}
        out = augmenter(example, seed)
        instance, crowd, unannotated = unpack_labels(out["instance_map"], p)
        inputs = {"keypoints": out["keypoints"], "num_people": out["num_people"],
                  "person_masks": person_masks(instance, p), "has_mask": raw["has_mask"],
                  "crowd_mask": crowd, "unannotated_mask": unannotated}
        if with_targets:
            return out["image"], encoder(present_people(inputs), map_size)
        return out["image"], inputs

    return fn
