"""A small synthetic COCO keypoint dataset written into a folder, with its known answers.

Used by tests/test_coco.py, tests/test_evaluation.py and tests/test_round_trip.py.

Images (width x height):
  1: 190 x 161  two annotated people (A: all 17 keypoints, B: ankles unlabelled), polygon
     masks; one person with a mask and no keypoints; one crowd region (uncompressed RLE).
  2: 120 x 100  nobody.
  3: 150 x 141  one annotated person without a segmentation (has_mask False).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from strongpose.skeleton import COCO_KEYPOINT_NAMES, COCO_TREE_EDGES
from strongpose.synthetic import uncompressed_rle

# A standing person in a unit box (x right, y down), COCO keypoint order.
TEMPLATE = np.array([
    (0.50, 0.08), (0.46, 0.05), (0.54, 0.05), (0.41, 0.07), (0.59, 0.07),
    (0.32, 0.22), (0.68, 0.22), (0.24, 0.38), (0.76, 0.38), (0.20, 0.53), (0.80, 0.53),
    (0.38, 0.55), (0.62, 0.55), (0.37, 0.76), (0.63, 0.76), (0.36, 0.97), (0.64, 0.97),
], np.float32)

IMAGE_SIZES = {1: (161, 190), 2: (100, 120), 3: (141, 150)}  # id -> (height, width)


def person_keypoints(x0: float, y0: float, w: float, h: float,
                     unlabelled: tuple[int, ...] = ()) -> np.ndarray:
    """(17, 3) keypoints of the template placed in box (x0, y0, w, h); v = 2, or 0 (x = y = 0)."""
    kps = np.zeros((len(TEMPLATE), 3), np.float32)
    kps[:, 0] = np.round(x0 + TEMPLATE[:, 0] * w)
    kps[:, 1] = np.round(y0 + TEMPLATE[:, 1] * h)
    kps[:, 2] = 2
    kps[list(unlabelled)] = 0
    return kps


def rect_polygon(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """A COCO polygon that pycocotools rasterises to columns x0..x1-1, rows y0..y1-1."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def rect_mask(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The uint8 mask of :func:`rect_polygon`."""
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@dataclass
class SynthCoco:
    """Paths of the written dataset and its known answers."""

    root: Path
    annotation_file: Path
    image_dir: Path
    keypoints: dict[int, np.ndarray] = field(default_factory=dict)   # image id -> (P, 17, 3)
    person_masks: dict[int, np.ndarray] = field(default_factory=dict)  # image id -> (P, H, W)
    crowd_masks: dict[int, np.ndarray] = field(default_factory=dict)
    unannotated_masks: dict[int, np.ndarray] = field(default_factory=dict)
    annotations: list[dict] = field(default_factory=list)


def _ann(ann_id: int, image_id: int, kps: np.ndarray | None, segm, box, area: float,
         iscrowd: int = 0) -> dict:
    flat = np.zeros(3 * len(TEMPLATE)) if kps is None else kps.reshape(-1)
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
        "keypoints": [float(v) for v in flat],
        "num_keypoints": int(0 if kps is None else np.count_nonzero(kps[:, 2] > 0)),
        "segmentation": segm, "bbox": [float(v) for v in box], "area": float(area),
    }


def write_synth_coco(root: Path) -> SynthCoco:
    """Write images (PNG, via cv2) and a keypoint JSON under ``root``; return the answers."""
    root = Path(root)
    image_dir = root / "images"
    ann_dir = root / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    out = SynthCoco(root=root, annotation_file=ann_dir / "person_keypoints_synth.json",
                    image_dir=image_dir)
    rng = np.random.default_rng(0)
    images = []
    for image_id, (h, w) in IMAGE_SIZES.items():
        name = f"{image_id:012d}.png"
        img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(image_dir / name), img)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})

    # Image 1: A and B annotated, C mask only, a crowd region.
    h, w = IMAGE_SIZES[1]
    kp_a = person_keypoints(10, 20, 60, 120)
    kp_b = person_keypoints(95, 15, 50, 100, unlabelled=(15, 16))
    box_a, box_b, box_c = (8, 18, 75, 146), (92, 12, 148, 118), (155, 10, 185, 60)
    crowd = rect_mask((h, w), 120, 125, 185, 158)
    anns = [
        _ann(1, 1, kp_a, rect_polygon(*box_a), (8, 18, 67, 128), 67 * 128),
        _ann(2, 1, kp_b, rect_polygon(*box_b), (92, 12, 56, 106), 56 * 106),
        _ann(3, 1, None, rect_polygon(*box_c), (155, 10, 30, 50), 30 * 50),
        _ann(4, 1, None, uncompressed_rle(crowd), (120, 125, 65, 33), float(crowd.sum()), iscrowd=1),
    ]
    out.keypoints[1] = np.stack([kp_a, kp_b])
    out.person_masks[1] = np.stack([rect_mask((h, w), *box_a), rect_mask((h, w), *box_b)])
    out.crowd_masks[1] = crowd
    out.unannotated_masks[1] = rect_mask((h, w), *box_c)

    # Image 2: nobody.
    h, w = IMAGE_SIZES[2]
    out.keypoints[2] = np.zeros((0, 17, 3), np.float32)
    out.person_masks[2] = np.zeros((0, h, w), np.uint8)
    out.crowd_masks[2] = np.zeros((h, w), np.uint8)
    out.unannotated_masks[2] = np.zeros((h, w), np.uint8)

    # Image 3: one person with keypoints and no segmentation.
    h, w = IMAGE_SIZES[3]
    kp_d = person_keypoints(40, 15, 70, 115)
    anns.append(_ann(5, 3, kp_d, [], (35, 12, 80, 122), 80 * 122))
    out.keypoints[3] = kp_d[None]
    out.person_masks[3] = np.zeros((1, h, w), np.uint8)
    out.crowd_masks[3] = np.zeros((h, w), np.uint8)
    out.unannotated_masks[3] = np.zeros((h, w), np.uint8)

    out.annotations = anns
    data = {
        "info": {"description": "StrongPose synthetic test set"},
        "images": images,
        "annotations": anns,
        "categories": [{
            "id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO_KEYPOINT_NAMES),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_TREE_EDGES],
        }],
    }
    out.annotation_file.write_text(json.dumps(data))
    return out
