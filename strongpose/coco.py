"""COCO keypoint annotations -> per-image ground-truth arrays (the targets input of docs/MAPS.md).

    coco = CocoKeypoints("annotations/person_keypoints_val2017.json", image_dir="val2017")
    gt = coco.ground_truth(image_id, skeleton, max_people=32)   # arrays at image resolution
    inputs = pad_to_stride(gt, stride=8).as_target_inputs()     # arrays at an input of s*n + 1

Who is who, per image (only the keypoint category, e.g. "person"):
  * annotated person: not crowd and at least one labelled keypoint (v > 0);
  * unannotated person: not crowd, no labelled keypoint; its mask goes into
    ``unannotated_mask`` (an ignore region for the heat-map loss);
  * crowd region: ``iscrowd = 1``; its mask goes into ``crowd_mask``.
More annotated people than ``max_people``: the largest (by area) are kept, a warning is
issued once per :class:`CocoKeypoints`, and the masks of the people left out join
``unannotated_mask`` so that they are ignored rather than taught as background.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from strongpose.geometry import padded_size
from strongpose.skeleton import Skeleton


class CocoFormatError(ValueError):
    """An annotation file that cannot be read or does not fit the skeleton."""


@dataclass(frozen=True)
class ImageGroundTruth:
    """Ground truth of one image as arrays (people padded to ``max_people`` rows).

    Attributes:
        image_id: COCO image id.
        keypoints: (P, K, 3) float32 x, y (pixels), v (0 unlabelled, > 0 labelled).
        num_people: annotated people present (rows beyond are zero padding).
        person_masks: (P, H, W) uint8 mask of each annotated person (0 where it has none).
        has_mask: (P,) bool, False where the person has no segmentation.
        crowd_mask: (H, W) uint8 union of crowd regions.
        unannotated_mask: (H, W) uint8 union of masks of people with no labelled keypoint.
        image_size: (height, width) of the original image; the arrays may be larger (padded).
        areas: (P,) float32 COCO area of each annotated person (0 for padding).
        annotation_ids: (P,) int64 COCO annotation id of each annotated person (-1 for padding).
    """

    image_id: int
    keypoints: np.ndarray
    num_people: int
    person_masks: np.ndarray
    has_mask: np.ndarray
    crowd_mask: np.ndarray
    unannotated_mask: np.ndarray
    image_size: tuple[int, int]
    areas: np.ndarray
    annotation_ids: np.ndarray

    @property
    def height(self) -> int:
        """Height of the arrays (pixels), padding included."""
        return int(self.crowd_mask.shape[0])

    @property
    def width(self) -> int:
        """Width of the arrays (pixels), padding included."""
        return int(self.crowd_mask.shape[1])

    def as_target_inputs(self) -> dict[str, np.ndarray]:
        """The single-example targets input of docs/MAPS.md (no leading batch axis)."""
        return {
            "keypoints": self.keypoints.astype(np.float32, copy=False),
            "num_people": np.asarray(self.num_people, dtype=np.int32),
            "person_masks": self.person_masks.astype(np.uint8, copy=False),
            "has_mask": self.has_mask.astype(bool, copy=False),
            "crowd_mask": self.crowd_mask.astype(np.uint8, copy=False),
            "unannotated_mask": self.unannotated_mask.astype(np.uint8, copy=False),
        }


def pad_to_stride(gt: ImageGroundTruth, stride: int) -> ImageGroundTruth:
    """Pad the arrays right and bottom with zeros to ``(s*n + 1, s*m + 1)`` pixels.

    Keypoint coordinates are unchanged (padding is on the far side); ``image_size`` keeps
    the original size.
    """
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    h, w = gt.height, gt.width
    ph, pw = padded_size(h, stride), padded_size(w, stride)
    pad2 = ((0, ph - h), (0, pw - w))
    return replace(
        gt,
        person_masks=np.pad(gt.person_masks, ((0, 0),) + pad2),
        crowd_mask=np.pad(gt.crowd_mask, pad2),
        unannotated_mask=np.pad(gt.unannotated_mask, pad2),
    )


class CocoKeypoints:
    """A COCO keypoint annotation file (wraps pycocotools' ``COCO``).

    Args:
        annotation_file: path of a ``person_keypoints_*.json``.
        image_dir: folder of the images (for :meth:`image_path`); None: unknown.
        category: name of the keypoint category; None: the only category with keypoints.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path | None = None,
                 category: Optional[str] = None) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.coco = load_coco(self.annotation_file)
        self.category_id, self.keypoint_names = _keypoint_category(self.coco, category)
        self._warned_max_people = False

    @property
    def image_ids(self) -> list[int]:
        """Every image id of the file, sorted (images without people included)."""
        return sorted(self.coco.getImgIds())

    def image_info(self, image_id: int) -> dict[str, Any]:
        """The file's ``images`` entry of one image."""
        if image_id not in self.coco.imgs:
            raise KeyError(f"image id {image_id} is not in {self.annotation_file}")
        return self.coco.imgs[image_id]

    def image_path(self, image_id: int) -> Path:
        """Where the image file lies (needs ``image_dir``)."""
        if self.image_dir is None:
            raise ValueError("CocoKeypoints was built without image_dir")
        return self.image_dir / self.image_info(image_id)["file_name"]

    def annotations(self, image_id: int) -> list[dict[str, Any]]:
        """The image's annotations of the keypoint category."""
        self.image_info(image_id)
        ids = self.coco.getAnnIds(imgIds=[image_id], catIds=[self.category_id], iscrowd=None)
        return self.coco.loadAnns(ids)

    def ground_truth(self, image_id: int, skeleton: Skeleton, max_people: int) -> ImageGroundTruth:
        """Arrays of one image at its own resolution, people padded to ``max_people``."""
        if max_people < 1:
            raise ValueError(f"max_people must be >= 1, got {max_people}")
        k = skeleton.num_keypoints
        if len(self.keypoint_names) != k:
            raise CocoFormatError(
                f"{self.annotation_file}: the category has {len(self.keypoint_names)} keypoints, "
                f"the skeleton {k}")
        info = self.image_info(image_id)
        h, w = int(info["height"]), int(info["width"])
        crowd = np.zeros((h, w), np.uint8)
        unannotated = np.zeros((h, w), np.uint8)
        people: list[tuple[dict[str, Any], np.ndarray]] = []
        for ann in self.annotations(image_id):
            if ann.get("iscrowd", 0):
                crowd |= self._mask(ann, h, w)
                continue
            kps = _keypoints_of(ann, k, self.annotation_file)
            if np.any(kps[:, 2] > 0):
                people.append((ann, kps))
            elif has_segmentation(ann):
                unannotated |= self._mask(ann, h, w)
        if len(people) > max_people:
            if not self._warned_max_people:
                warnings.warn(
                    f"image {image_id} has {len(people)} annotated people, more than "
                    f"max_people={max_people}: keeping the largest, ignoring the rest "
                    "(warned once)", stacklevel=2)
                self._warned_max_people = True
            people.sort(key=lambda p: -float(p[0].get("area", 0.0)))
            for ann, _ in people[max_people:]:
                if has_segmentation(ann):
                    unannotated |= self._mask(ann, h, w)
            people = people[:max_people]
        keypoints = np.zeros((max_people, k, 3), np.float32)
        masks = np.zeros((max_people, h, w), np.uint8)
        has_mask = np.zeros((max_people,), bool)
        areas = np.zeros((max_people,), np.float32)
        ann_ids = np.full((max_people,), -1, np.int64)
        for i, (ann, kps) in enumerate(people):
            keypoints[i] = kps
            areas[i] = float(ann.get("area", 0.0))
            ann_ids[i] = int(ann["id"])
            if has_segmentation(ann):
                masks[i] = self._mask(ann, h, w)
                has_mask[i] = True
        return ImageGroundTruth(
            image_id=int(image_id), keypoints=keypoints, num_people=len(people),
            person_masks=masks, has_mask=has_mask, crowd_mask=crowd,
            unannotated_mask=unannotated, image_size=(h, w), areas=areas,
            annotation_ids=ann_ids)

    def _mask(self, ann: dict[str, Any], h: int, w: int) -> np.ndarray:
        """Binary (h, w) uint8 mask of a polygon or RLE segmentation."""
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
            rle = mask_utils.frPyObjects(segm, h, w)
        elif isinstance(segm, dict):
            rle = segm
        else:
            raise CocoFormatError(
                f"{self.annotation_file}: annotation {ann.get('id')} has an unreadable segmentation")
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            m = mask_utils.decode(rle)
        if m.shape[:2] != (h, w):
            raise CocoFormatError(
                f"{self.annotation_file}: annotation {ann.get('id')} mask is {m.shape[:2]}, "
                f"image is {(h, w)}")
        return (m > 0).astype(np.uint8)


def load_coco(annotation_file: str | Path) -> COCO:
    """Read and check a COCO annotation JSON into a pycocotools ``COCO`` (quietly)."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CocoFormatError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: a COCO file holds a JSON object at the top level")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise CocoFormatError(f"{path}: not a COCO annotation file (missing {missing})")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _keypoint_category(coco: COCO, name: Optional[str]) -> tuple[int, list[str]]:
    cats = [c for c in coco.dataset["categories"] if c.get("keypoints")]
    if name is not None:
        cats = [c for c in cats if c.get("name") == name]
    if len(cats) != 1:
        found = [c.get("name") for c in cats]
        raise CocoFormatError(
            f"expected exactly one keypoint category{'' if name is None else f' named {name!r}'}, "
            f"found {found}")
    return int(cats[0]["id"]), list(cats[0]["keypoints"])


def _keypoints_of(ann: dict[str, Any], k: int, source: Path) -> np.ndarray:
    flat = ann.get("keypoints") or []
    if len(flat) == 0:
        return np.zeros((k, 3), np.float32)
    if len(flat) != 3 * k:
        raise CocoFormatError(
            f"{source}: annotation {ann.get('id')} has {len(flat) // 3} keypoints "
            f"({len(flat)} numbers), the skeleton has {k}")
    return np.asarray(flat, np.float32).reshape(k, 3)


def has_segmentation(ann: dict[str, Any]) -> bool:
    """Whether a COCO annotation holds a usable polygon or RLE segmentation."""
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        return any(len(poly) >= 6 for poly in segm)
    return isinstance(segm, dict) and "counts" in segm


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image {str(path)!r} cannot be decoded (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

