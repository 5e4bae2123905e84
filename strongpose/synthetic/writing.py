"""Writing a split: images and its COCO keypoints JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2

from strongpose.skeleton import COCO_KEYPOINT_NAMES

from .options import COCO_SKELETON_PAIRS, JPEG_QUALITY, SynthOptions, size_pair
from .scenes import render_image


# ------------------------------------------------------------------------ writing
def category() -> dict[str, Any]:
    """COCO's person category with keypoint names and its 1-based skeleton pairs."""
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO_KEYPOINT_NAMES),
            "skeleton": [list(p) for p in COCO_SKELETON_PAIRS]}


def annotation_path(root: str | Path, split: str) -> Path:
    """``root/annotations/person_keypoints_<split>.json``."""
    return Path(root) / "annotations" / f"person_keypoints_{split}.json"


def write_dataset(root: str | Path, *, split: str = "train", images: int = 200,
                  size: int | tuple[int, int] = 257, people: tuple[int, int] = (1, 4),
                  seed: int = 0, crowd_rate: float = 0.15, overlap_rate: float = 0.3,
                  empty_rate: float = 0.05, mask_only_rate: float = 0.05,
                  unlabelled_rate: float = 0.03, heights: tuple[float, float] = (0.35, 0.85),
                  back_view_rate: float = 0.25, progress: bool = False) -> Path:
    """Write ``images`` images to ``root/<split>/`` and their COCO keypoints JSON.

    Returns the annotation file, ``root/annotations/person_keypoints_<split>.json``; the
    images are ``root/<split>/<id:012d>.jpg`` (ids 1..images). See :class:`SynthOptions`
    for the arguments.
    """
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    if not split or any(c in split for c in "/\\") or split in (".", "..", "annotations"):
        raise ValueError(f"bad split name {split!r}")
    opts = SynthOptions(size=size_pair(size), people=tuple(people), heights=tuple(heights),
                        crowd_rate=crowd_rate, overlap_rate=overlap_rate, empty_rate=empty_rate,
                        mask_only_rate=mask_only_rate, unlabelled_rate=unlabelled_rate,
                        back_view_rate=back_view_rate)
    root = Path(root)
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_file = annotation_path(root, split)
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    h, w = opts.size
    image_entries, anns = [], []
    indices: Any = range(images)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=f"synthetic {split}", unit="img", file=sys.stderr)
    for i in indices:
        image_id = i + 1
        rendered = render_image(seed, i, opts, split)
        name = f"{image_id:012d}.jpg"
        ok, buf = cv2.imencode(".jpg", rendered.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"could not encode {name}")
        (image_dir / name).write_bytes(buf.tobytes())
        image_entries.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for person in rendered.people:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         **person.annotation})
    data = {
        "info": {"description": f"StrongPose synthetic people ({split}, seed {seed})",
                 "version": "1", "year": 2024},
        "licenses": [],
        "images": image_entries,
        "annotations": anns,
        "categories": [category()],
    }
    tmp = ann_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(ann_file)
    return ann_file


def write_splits(root: str | Path, *, train: int = 200, val: int = 50, seed: int = 0,
                 progress: bool = False, **kwargs: Any) -> dict[str, Path]:
    """A ``train`` and a ``val`` split under ``root`` (each its own images: the split name
    is part of every image's seed). ``kwargs`` go to :func:`write_dataset`."""
    return {split: write_dataset(root, split=split, images=n, seed=seed, progress=progress,
                                 **kwargs)
            for split, n in (("train", train), ("val", val))}
