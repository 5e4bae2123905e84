"""A network over a COCO keypoints split -> people in original pixels -> COCO AP.

    results, ids = predict_split(network, cfg, "val", limit=50)      # COCO result dicts
    figures = split_ap(network, cfg, "val", limit=50)                # {"AP", "AP50", ...}

The images go through the evaluation crop of training (:class:`strongpose.augment.Augmenter`
in identity mode: the longer side fitted to ``model.input_size``, centred, zero padded),
in batches; the network runs on each batch through ``keras.ops`` (any backend); the
robust decoder (``Decoder.from_config``) turns the outputs into people, mapped back to the
original image with each image's crop transform (``augment.crop_transform``);
``evaluation.evaluate`` scores them (COCOeval keypoints, the skeleton's OKS sigmas).

``limit=N`` takes the first N images of the file by image id. Missing or unreadable
images are left out with one warning (and out of the scoring: only the images decoded
are scored); the count is in :attr:`Prediction.skipped`.

The decoder runs at the stride of the network it is given (read off its outputs: maps of
``n + 1`` cells for ``s*n + 1`` pixels): in training, the training stride. ``network`` is
anything called as ``network(images, training=False)`` that returns the dict of maps.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from strongpose.evaluation import evaluate, people_to_results

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf
    from strongpose.config import Config


@dataclass
class Prediction:
    """What :func:`predict_split` produced."""

    results: list[dict[str, Any]]        # COCO result dicts (original pixels)
    image_ids: list[int]                 # the images decoded (scored), in order
    people: dict[int, list] = field(default_factory=dict)  # image id -> post_proc.Person list
    skipped: list[str] = field(default_factory=list)       # "path: why" of images left out
    coco: Any = None                     # the ground truth (strongpose.coco.CocoKeypoints)


def split_images(cfg: "Config", split_or_annotation_file: str | os.PathLike,
                 image_dir: Optional[str | os.PathLike] = None, limit: Optional[int] = None
                 ) -> tuple[Any, list[int], list[str]]:
    """(CocoKeypoints, the first ``limit`` image ids whose file exists, "path: missing"
    lines of those that do not) of a config split name or a keypoints JSON path."""
    from strongpose.coco import CocoKeypoints
    from strongpose.data_generator import resolve_split

    _, ann, images = resolve_split(cfg, split_or_annotation_file, image_dir)
    if not Path(images).is_dir():
        raise FileNotFoundError(f"image folder {str(images)!r} does not exist")
    coco = CocoKeypoints(ann, image_dir=images)
    ids = coco.image_ids
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"validation: limit must be >= 1, got {limit}")
        ids = ids[:int(limit)]
    if not ids:
        raise ValueError(f"{ann}: the data set is empty (no images)")
    present = {i: coco.image_path(i).is_file() for i in ids}
    missing = [f"{coco.image_path(i)}: missing" for i in ids if not present[i]]
    return coco, [i for i in ids if present[i]], missing


def identity_batches(cfg: "Config", paths: list[str], batch_size: int) -> "tf.data.Dataset":
    """Batches ``(images (B, S, S, 3) float32 0..255, matrices (B, 3, 3), index (B,))`` of
    the image files in ``paths``, in order, in the evaluation crop (identity mode). A file
    that does not decode is dropped (its index does not come out)."""
    import tensorflow as tf
    from strongpose.augment import Augmenter

    augmenter = Augmenter.from_config(cfg, augment=False, mask_factor=None)
    k = cfg.skeleton.num_keypoints

    def load(index: tf.Tensor, path: tf.Tensor):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        example = {"image": image, "instance_map": tf.zeros(tf.shape(image)[:2], tf.int32),
                   "keypoints": tf.zeros([1, k, 3], tf.float32), "num_people": tf.constant(0)}
        out = augmenter(example)
        return out["image"], out["matrix"], index

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                             tf.constant(paths)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def output_stride(input_size: int, outputs: dict[str, Any]) -> int:
    """The stride ``s`` of a network's outputs: maps of ``n + 1`` cells for ``s*n + 1`` pixels."""
    from strongpose.model import OUTPUT_KEYS
    cells = int(np.shape(outputs[OUTPUT_KEYS[0]])[1])
    return (int(input_size) - 1) // max(cells - 1, 1)


def predict_split(network: "keras.Model", cfg: "Config",
                  split_or_annotation_file: str | os.PathLike,
                  image_dir: Optional[str | os.PathLike] = None, *, limit: Optional[int] = None,
                  batch_size: Optional[int] = None, keep_people: bool = False) -> Prediction:
    """Run ``network`` over a split's first ``limit`` images and decode them.

    Args:
        network: ``build_model``'s network (dict of maps; training outputs are ignored).
        cfg: the config (skeleton, ``model.input_size``, ``codec``, ``decoder``, data paths).
        split_or_annotation_file: a split name of ``cfg.data`` or a keypoints JSON path.
        image_dir: its images (default for a split: ``data.coco_root/<split>``).
        limit: the first N images by id; None: all.
        batch_size: default ``train.batch_size``.
        keep_people: also return each image's ``Person`` list (for drawing).
    """
    from keras import ops

    from strongpose.augment import crop_transform
    from strongpose.post_proc import Decoder

    coco, ids, skipped = split_images(cfg, split_or_annotation_file, image_dir, limit)
    size = int(cfg.model.input_size)
    paths = [str(coco.image_path(i)) for i in ids]
    batch = int(batch_size or cfg.train.batch_size)
    results: list[dict[str, Any]] = []
    done: list[int] = []
    people_of: dict[int, list] = {}
    for images, matrices, index in identity_batches(cfg, paths, batch):
        outputs = network(images, training=False)
        outputs = {key: ops.convert_to_numpy(value) for key, value in outputs.items()}
        decoder = Decoder.from_config(cfg, stride=output_stride(size, outputs))
        index = np.asarray(index)
        transforms = []
        for m, i in zip(np.asarray(matrices), index):
            info = coco.image_info(ids[i])
            transforms.append(crop_transform(m, int(info["width"]), int(info["height"])))
        for i, people in zip(index, decoder.decode_outputs(outputs, transforms)):
            image_id = ids[int(i)]
            results.extend(people_to_results(people, image_id))
            done.append(image_id)
            if keep_people:
                people_of[image_id] = people
    unread = sorted(set(ids) - set(done))
    skipped += [f"{coco.image_path(i)}: unreadable" for i in unread]
    if skipped:
        warnings.warn(f"validation: {len(skipped)} image(s) left out, e.g. {skipped[0]}",
                      stacklevel=2)
    return Prediction(results=results, image_ids=done, people=people_of, skipped=skipped,
                      coco=coco)


def split_ap(network: "keras.Model", cfg: "Config", split_or_annotation_file: str | os.PathLike,
             image_dir: Optional[str | os.PathLike] = None, *, limit: Optional[int] = None,
             batch_size: Optional[int] = None) -> dict[str, float]:
    """COCO keypoint figures (``AP``, ``AP50``, ... as :func:`evaluation.evaluate`) of
    ``network`` on a split's first ``limit`` images (see :func:`predict_split`)."""
    pred = predict_split(network, cfg, split_or_annotation_file, image_dir, limit=limit,
                         batch_size=batch_size)
    if not pred.image_ids:
        raise ValueError(f"{pred.coco.annotation_file}: no image could be read")
    return evaluate(pred.coco, pred.results, "keypoints", pred.image_ids,
                    skeleton=cfg.skeleton)
