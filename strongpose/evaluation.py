"""Detected people -> COCO results JSON, and COCOeval (keypoints or segm) with named figures.

    results = people_to_results(people, image_id)           # one image
    figures = evaluate(coco_gt, results, "keypoints", skeleton=cfg.skeleton)
    figures["AP"], figures["AR50"], ...

A result is ``{"image_id", "category_id", "keypoints": [x, y, v, ...] (v = keypoint score),
"score", "bbox": [x, y, w, h]}`` plus ``"segmentation"`` (compressed RLE, counts as str)
where the person has a mask. Results hold finite numbers only: building, saving or
loading a result with NaN or Infinity is a ``ValueError`` naming the image and the field
(JSON has no NaN, and COCOeval would rank or score such a detection arbitrarily).
:func:`save_results` writes atomically (:func:`strongpose.files.atomic_write`): a failed
save leaves no half-written file. :func:`evaluate` hands COCOeval only the fields of the
chosen iou type (keypoints: keypoints + score; segm: segmentation + score, people
without a mask left out), so that pycocotools computes the detection areas the
standard way (from the keypoints' extent, or the mask) rather than from the bbox.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from strongpose.coco import CocoKeypoints, has_segmentation, load_coco
from strongpose.files import atomic_write
from strongpose.skeleton import COCO_SKELETON, Skeleton

METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl",
                                 "AR", "AR50", "AR75", "ARm", "ARl")
IOU_TYPES = ("keypoints", "segm")


class PersonLike(Protocol):
    """What :func:`people_to_results` reads from a detected person (``post_proc.Person``)."""

    keypoints: np.ndarray     # (K, 3) x, y, score in original-image pixels
    score: float
    box: Sequence[float]      # (x, y, w, h)
    mask: Optional[np.ndarray]  # bool (H, W) or None


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary (H, W) mask -> COCO compressed RLE with ``counts`` as str (JSON friendly)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8) > 0, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _field_label(key: str, index: Optional[int]) -> str:
    """``keypoints[7] (keypoint 2, y)``, ``bbox[2] (w)``, ``score``: a result field for messages."""
    if index is None:
        return key
    if key == "keypoints":
        return f"{key}[{index}] (keypoint {index // 3}, {('x', 'y', 'score')[index % 3]})"
    if key == "bbox" and index < 4:
        return f"{key}[{index}] ({('x', 'y', 'w', 'h')[index]})"
    return f"{key}[{index}]"


def _non_finite(value: Any) -> Optional[tuple[Optional[int], Any]]:
    """The first non-finite number in a number or a (nested) list: (index or None, value)."""
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(value) else (None, value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) for v in value) and all(map(math.isfinite, value)):
            return None                                  # the common case, at C speed
        for i, v in enumerate(value):
            bad = _non_finite(v)
            if bad is not None:
                return i, bad[1]
    if isinstance(value, dict):
        for v in value.values():
            bad = _non_finite(v)
            if bad is not None:
                return bad
    return None


def check_finite(result: dict[str, Any], label: str = "result") -> None:
    """Raise ``ValueError`` if a number of ``result`` is NaN or +-Infinity.

    The message names ``label`` (e.g. ``"result 3"``), the result's image id and the field
    (with the keypoint and coordinate for ``keypoints``): ``"result 3 of image 17:
    keypoints[7] (keypoint 2, y) is nan; ..."``.
    """
    for key, value in result.items():
        bad = _non_finite(value)
        if bad is not None:
            index, number = bad
            if key == "segmentation":
                index = None
            raise ValueError(
                f"{label} of image {result.get('image_id')!r}: {_field_label(key, index)} "
                f"is {float(number)!r}; COCO results hold finite numbers only (no NaN or Infinity)")


def person_to_result(person: PersonLike, image_id: int, category_id: int = 1) -> dict[str, Any]:
    """One detected person as a COCO result dict; NaN or Infinity is a ``ValueError``."""
    return _person_to_result(person, image_id, category_id, "person")


def _person_to_result(person: PersonLike, image_id: int, category_id: int,
                      label: str) -> dict[str, Any]:
    kps = np.asarray(person.keypoints, dtype=np.float64)
    if kps.ndim != 2 or kps.shape[1] != 3:
        raise ValueError(f"person keypoints must be (K, 3), got shape {kps.shape}")
    box = [float(v) for v in person.box]
    if len(box) != 4:
        raise ValueError(f"person box must be (x, y, w, h), got {person.box!r}")
    result: dict[str, Any] = {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "keypoints": [float(v) for v in kps.reshape(-1)],
        "score": float(person.score),
        "bbox": box,
    }
    check_finite(result, label)
    mask = getattr(person, "mask", None)
    if mask is not None:
        result["segmentation"] = encode_mask(mask)
    return result


def people_to_results(people: Iterable[PersonLike], image_id: int,
                      category_id: int = 1) -> list[dict[str, Any]]:
    """The detected people of one image as COCO result dicts (see :func:`person_to_result`)."""
    return [_person_to_result(p, image_id, category_id, f"person {i}")
            for i, p in enumerate(people)]


def save_results(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write results as a COCO results JSON (e.g. a test-dev submission file).

    Every result is checked first (:func:`check_finite`: NaN or Infinity is a
    ``ValueError`` naming the result, its image id and the field) and the JSON is
    written with ``allow_nan=False``, through :func:`strongpose.files.atomic_write`: on
    any failure ``path`` keeps what it held before (or stays absent) and no temporary
    file is left.
    """
    path = Path(path)
    results = list(results)
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise ValueError(f"result {i} is a {type(r).__name__}, not a dict")
        check_finite(r, f"result {i}")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(results, fh, allow_nan=False)

    return atomic_write(path, write)


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Read a COCO results JSON written by :func:`save_results` (or anyone).

    A file holding ``NaN``, ``Infinity`` or ``-Infinity`` (Python's json writes them unless
    told not to) is a ``ValueError`` naming the result, its image id and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: a results file holds a JSON list of objects")
    for i, r in enumerate(data):
        missing = {"image_id", "category_id", "score"} - set(r)
        if missing:
            raise ValueError(f"{path}: result {i} lacks {sorted(missing)}")
        try:
            check_finite(r, f"result {i}")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}. The file holds NaN or Infinity, which JSON does "
                             f"not allow: write it again with finite numbers") from None
    return data


def _as_coco(coco_gt: COCO | CocoKeypoints | str | Path) -> COCO:
    if isinstance(coco_gt, CocoKeypoints):
        return coco_gt.coco
    if isinstance(coco_gt, COCO):
        return coco_gt
    return load_coco(coco_gt)


def _results_for(results: Sequence[dict[str, Any]], iou_type: str, k: int,
                 image_ids: set[int]) -> list[dict[str, Any]]:
    """The fields COCOeval needs for ``iou_type``, for the chosen images only."""
    out = []
    for r in results:
        if int(r["image_id"]) not in image_ids:
            continue
        base = {"image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
                "score": float(r["score"])}
        if iou_type == "keypoints":
            kps = r.get("keypoints")
            if kps is None or len(kps) != 3 * k:
                raise ValueError(
                    f"result for image {r['image_id']}: keypoints must hold 3*K = {3 * k} numbers, "
                    f"got {None if kps is None else len(kps)}")
            base["keypoints"] = [float(v) for v in kps]
        else:
            if r.get("segmentation") is None:
                continue
            base["segmentation"] = r["segmentation"]
        out.append(base)
    return out


def _segm_ground_truth(gt: COCO, ignore_unannotated: bool) -> COCO:
    """``gt`` for mask scoring: people without a segmentation dropped (pycocotools cannot
    rasterise them); with ``ignore_unannotated``, people without a labelled keypoint made
    ignore regions (crowd). ``gt`` itself where nothing changes."""
    def unannotated(a: dict[str, Any]) -> bool:
        return not a.get("iscrowd", 0) and int(a.get("num_keypoints", 0)) == 0

    anns = gt.dataset["annotations"]
    if all(has_segmentation(a) for a in anns) and not (
            ignore_unannotated and any(unannotated(a) for a in anns)):
        return gt
    data = dict(gt.dataset)
    data["annotations"] = [
        dict(a, iscrowd=1) if ignore_unannotated and unannotated(a) else a
        for a in anns if has_segmentation(a)]
    out = COCO()
    out.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        out.createIndex()
    return out


def _summary(ev: COCOeval) -> dict[str, float]:
    """The 10 named figures from an accumulated COCOeval (as COCOeval's own summarize)."""
    p = ev.params
    max_det = p.maxDets[-1]
    m = p.maxDets.index(max_det)

    def figure(kind: str, iou: Optional[float], area: str) -> float:
        a = p.areaRngLbl.index(area)
        arr = ev.eval["precision"] if kind == "AP" else ev.eval["recall"]
        if iou is not None:
            arr = arr[np.where(np.isclose(p.iouThrs, iou))[0]]
        arr = arr[..., a, m]
        valid = arr[arr > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    out = {}
    for kind in ("AP", "AR"):
        out[kind] = figure(kind, None, "all")
        out[f"{kind}50"] = figure(kind, 0.5, "all")
        out[f"{kind}75"] = figure(kind, 0.75, "all")
        out[f"{kind}m"] = figure(kind, None, "medium")
        out[f"{kind}l"] = figure(kind, None, "large")
    return {name: out[name] for name in METRIC_NAMES}


def evaluate(coco_gt: COCO | CocoKeypoints | str | Path, results: Sequence[dict[str, Any]],
             iou_type: str = "keypoints", image_ids: Optional[Iterable[int]] = None, *,
             skeleton: Skeleton = COCO_SKELETON, quiet: bool = True,
             ignore_unannotated: bool = False) -> dict[str, float]:
    """COCOeval of ``results`` against ``coco_gt``: the 10 named figures.

    Args:
        coco_gt: ground truth (pycocotools COCO, :class:`CocoKeypoints` or a JSON path).
        results: COCO result dicts (see :func:`people_to_results`).
        iou_type: "keypoints" (OKS with ``skeleton.sigmas``) or "segm" (mask IoU).
        image_ids: images to score; None: every image of ``coco_gt``.
        skeleton: whose OKS sigmas COCOeval uses.
        quiet: suppress COCOeval's prints.
        ignore_unannotated: segm only: people with no labelled keypoint become ignore
            regions (like crowds) instead of people to find; keypoint scoring ignores
            them anyway. People without a segmentation are left out of mask scoring.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}``.
        No results for the images: all 0.0. A figure with no ground truth in its area
        range is -1.0, as in COCOeval.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt = _as_coco(coco_gt)
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    unknown = sorted(set(ids) - set(gt.getImgIds()))
    if unknown:
        raise ValueError(f"image ids {unknown[:5]} are not in the ground truth")
    stray = sorted({int(r["image_id"]) for r in results} - set(gt.getImgIds()))
    if stray:
        raise ValueError(f"results name image ids {stray[:5]} that are not in the ground truth")
    if iou_type == "segm":
        gt = _segm_ground_truth(gt, ignore_unannotated)
    dets = _results_for(results, iou_type, skeleton.num_keypoints, set(ids))
    if not dets or not ids:
        return {name: 0.0 for name in METRIC_NAMES}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        coco_dt = gt.loadRes(dets)
        ev = COCOeval(gt, coco_dt, iouType=iou_type)
        ev.params.imgIds = ids
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = skeleton.sigmas_array.astype(np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return _summary(ev)
