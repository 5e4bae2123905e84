"""A network over a COCO keypoints split -> people in original pixels -> COCO AP.

    results, ids = predict_split(network, cfg, "val", limit=50)      # COCO result dicts
    figures = split_ap(network, cfg, "val", limit=50)                # {"AP", "AP50", ...}

One code path with ``evaluate.py``: the images go through :class:`strongpose.predictor.Predictor`
(read with OpenCV, longer side resized to ``model.input_size``, padded right and bottom to
``s*n + 1``; consecutive images of one size share a network batch), the robust decoder
returns people in original pixels, and ``evaluation.evaluate`` scores them (COCOeval
keypoints, the skeleton's OKS sigmas). So the same weights give the same figures here, at
the end of ``train.py``, as from ``python evaluate.py RUN_FOLDER`` (single scale, no flip).
:func:`predict_images` is the loop both use.

``limit=N`` takes the first N images of the file by image id. Missing or unreadable
images are left out with one warning (and out of the scoring: only the images decoded
are scored); the count is in :attr:`Prediction.skipped`.

The decoder runs at the stride of the network it is given: ``stride``, by default
``model.output_stride`` (training's network). ``network`` is a Keras model or anything
called as ``network(images, training=False)`` that returns the dict of maps
(:func:`strongpose.predictor.model_network`: any backend).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from strongpose.evaluation import evaluate, people_to_results
from strongpose.predictor import Prediction as ImagePrediction, Predictor, full_size_mask, model_network

if TYPE_CHECKING:  # pragma: no cover
    import keras
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


def predict_images(predictor: Predictor, images: Sequence[tuple[int, str | os.PathLike]], *,
                   batch_size: int = 1, keep_masks: bool = True, keep_people: bool = False,
                   progress: bool = False) -> Prediction:
    """Run ``predictor`` over ``(image id, path)`` pairs, in order: their COCO results (in
    original pixels), the ids decoded, and ``"path: why"`` of the images that failed.

    ``keep_masks=False`` leaves the masks out of the results (keypoints-only scoring, the
    test-dev file); ``progress`` shows a bar on stderr.
    """
    import sys

    from tqdm import tqdm

    id_of = {str(path): int(image_id) for image_id, path in images}
    out = Prediction(results=[], image_ids=[])
    bar = tqdm(total=len(id_of), disable=not progress, unit="img", file=sys.stderr)

    def failed(name: str, err: Exception) -> None:
        text = str(err)
        out.skipped.append(text if text.startswith(name) else f"{name}: {text}")

    for pred in predictor.predict(list(id_of), batch_size=batch_size, on_error=failed):
        image_id = id_of[pred.source]
        out.results.extend(_results(pred, image_id, keep_masks))
        out.image_ids.append(image_id)
        if keep_people:
            out.people[image_id] = pred.people
        bar.update(1)
    bar.close()
    return out


def _results(pred: ImagePrediction, image_id: int, keep_masks: bool) -> list[dict]:
    """One image's COCO results; masks of a downscaled huge image (at ``pred.image``'s size)
    are brought to the original size one person at a time, for the RLE."""
    if not keep_masks:
        return people_to_results([replace(p, mask=None) for p in pred.people], image_id)
    if pred.size == pred.image.shape[:2]:
        return people_to_results(pred.people, image_id)
    return [r for p in pred.people
            for r in people_to_results([replace(p, mask=full_size_mask(p.mask, pred.size))],
                                       image_id)]


def predict_split(network: "keras.Model", cfg: "Config",
                  split_or_annotation_file: str | os.PathLike,
                  image_dir: Optional[str | os.PathLike] = None, *, limit: Optional[int] = None,
                  batch_size: Optional[int] = None, keep_people: bool = False,
                  stride: Optional[int] = None) -> Prediction:
    """Run ``network`` over a split's first ``limit`` images and decode them.

    Args:
        network: ``build_model``'s network (dict of maps; training outputs are ignored).
        cfg: the config (skeleton, ``model.input_size``, ``codec``, ``decoder``, data paths).
        split_or_annotation_file: a split name of ``cfg.data`` or a keypoints JSON path.
        image_dir: its images (default for a split: ``data.coco_root/<split>``).
        limit: the first N images by id; None: all.
        batch_size: images per network call (consecutive images of one size); default 1,
            as ``evaluate.py``'s: batched convolutions may differ in the last bits.
        keep_people: also return each image's ``Person`` list (for drawing).
        stride: the network's output stride (default ``model.output_stride``: training's).
    """
    coco, ids, missing = split_images(cfg, split_or_annotation_file, image_dir, limit)
    predictor = Predictor(model_network(network), cfg, stride=stride or cfg.model.output_stride)
    pred = predict_images(predictor, [(i, coco.image_path(i)) for i in ids],
                          batch_size=int(batch_size or 1),
                          keep_people=keep_people)
    pred.skipped = missing + pred.skipped
    pred.coco = coco
    if pred.skipped:
        warnings.warn(f"validation: {len(pred.skipped)} image(s) left out, e.g. {pred.skipped[0]}",
                      stacklevel=2)
    return pred


def split_ap(network: "keras.Model", cfg: "Config", split_or_annotation_file: str | os.PathLike,
             image_dir: Optional[str | os.PathLike] = None, *, limit: Optional[int] = None,
             batch_size: Optional[int] = None, stride: Optional[int] = None) -> dict[str, float]:
    """COCO keypoint figures (``AP``, ``AP50``, ... as :func:`evaluation.evaluate`) of
    ``network`` on a split's first ``limit`` images (see :func:`predict_split`)."""
    pred = predict_split(network, cfg, split_or_annotation_file, image_dir, limit=limit,
                         batch_size=batch_size, stride=stride)
    if not pred.image_ids:
        raise ValueError(f"{pred.coco.annotation_file}: no image could be read")
    return evaluate(pred.coco, pred.results, "keypoints", pred.image_ids,
                    skeleton=cfg.skeleton)
