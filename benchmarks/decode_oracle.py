"""Decoder on exact maps: encode COCO ground truth, decode it back, score it with COCOeval.

    python benchmarks/decode_oracle.py --annotations coco-mini/annotations/person_keypoints_train2017.json
    python benchmarks/decode_oracle.py --annotations FILE --stride 16 --people 32 --json-out out.json
    python benchmarks/decode_oracle.py --annotations FILE --config strongpose decoder.nms_radius=8

For every image: ground truth at the image's own size, padded right/bottom to s*n+1
(``strongpose.coco``) -> targets (``strongpose.targets``, graph mode, one trace per map
size) -> the exact maps ``heatmap, short, mid, long, body`` as float32 NumPy, fed straight
to the decoder as probabilities -> ``post_proc.decode`` (only this call is timed, with
``time.perf_counter``) -> COCO results -> COCOeval keypoints (skeleton sigmas) and segm.
An upper bound for the decoder: what it loses here it loses on any network.

Figures: AP, AP50, AP75, AR (keypoints); segm_AP (standard COCO: every non-crowd person
with a mask is a person to find, including those without keypoints, whom no
keypoint decoder can find from these maps) and segm_AP_annotated (people without
keypoints are ignore regions); decoder ms per image (median, p90 over all images, and
the median over images with at least one annotated person).

Grouping (``match_people``), for each annotated ground-truth person (non-crowd, >= 1
labelled keypoint, within ``codec.max_people``) with labelled keypoints L:
  a detection *holds* GT keypoint k when its keypoint k has score > 0 and lies within
  ``--match-px`` (default 4) input pixels of the GT point;
  * whole:   one detection holds every keypoint of L;
  * split:   not whole, and 2+ detections each hold at least one keypoint of L;
  * partial: not whole, and exactly one detection holds some (not all) of L;
  * missed:  no detection holds any keypoint of L.
``detections_merged`` counts detections holding keypoints of 2+ GT people.

``--people N`` builds 640x640 scenes with 1, 2, 4, ..., N copies of one real person
(the annotated person with the most labelled keypoints whose mask and keypoints fit a
cell of a ceil(sqrt(N)) grid; scaled down to fit if none does), translated into the
cells of that grid (no overlap), and times the decoder on each (``ms_by_people``,
median of ``--repeats`` runs).

Progress goes to stderr (tqdm); the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strongpose import cli  # noqa: E402  (standard library only)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (with ``--debug``); usage errors exit 2 with one line."""
    ap = cli.ArgumentParser(prog="decode_oracle.py", description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True, help="COCO person_keypoints_*.json")
    ap.add_argument("--stride", type=int, choices=(8, 16), default=8)
    ap.add_argument("--people", type=int, default=0, help="also time scenes of 1..N people")
    ap.add_argument("--config", default=None, help="preset name or YAML path (default: defaults)")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--json-out", default=None, help="also write the JSON summary here")
    ap.add_argument("--match-px", type=float, default=4.0, help="grouping match radius (px)")
    ap.add_argument("--repeats", type=int, default=3, help="decode repeats per --people scene")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. decoder.nms_radius=8")
    args = ap.parse_args(argv)
    if args.people < 0 or args.limit < 0 or args.repeats < 1:
        ap.error("--people and --limit must be >= 0, --repeats >= 1")
    return args


if __name__ == "__main__":
    parse_args()             # --help and usage errors end here, before TensorFlow is imported
cli.import_tensorflow()      # TF_CPP_MIN_LOG_LEVEL=3 and its start-up lines dropped

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from strongpose import post_proc  # noqa: E402
from strongpose.coco import CocoKeypoints, ImageGroundTruth, pad_to_stride  # noqa: E402
from strongpose.config import Config, load_config  # noqa: E402
from strongpose.evaluation import evaluate, people_to_results  # noqa: E402
from strongpose.geometry import ImageTransform  # noqa: E402
from strongpose.maps import MAP_KEYS  # noqa: E402
from strongpose.targets import TargetEncoder  # noqa: E402

SCENE_SIZE = 640


# ------------------------------------------------------------------------ encode
class OracleEncoder:
    """Ground truth -> exact maps (NumPy), with one graph-mode trace per map size."""

    def __init__(self, cfg: Config, stride: int) -> None:
        self.encoder = TargetEncoder.from_config(cfg, stride=stride)
        self.stride = stride
        self._fns: dict[tuple[int, int], Callable] = {}

    def __call__(self, gt: ImageGroundTruth) -> dict[str, np.ndarray]:
        """Maps ``(h, w, C)`` float32 of ground truth padded to s*n + 1."""
        size = self.encoder.map_size_for((gt.height, gt.width))
        fn = self._fns.get(size)
        if fn is None:
            fn = tf.function(lambda inputs, size=size: {
                k: v for k, v in self.encoder(inputs, map_size=size).items() if k in MAP_KEYS})
            self._fns[size] = fn
        out = fn({k: tf.convert_to_tensor(v) for k, v in gt.as_target_inputs().items()})
        return {k: np.asarray(out[k].numpy(), np.float32) for k in MAP_KEYS}


# ------------------------------------------------------------------------ decode
def decode_timed(maps: dict[str, np.ndarray], cfg: Config, stride: int,
                 image_size: tuple[int, int]) -> tuple[list, float]:
    """The config's decoder on the maps; returns (people, milliseconds of that call)."""
    h, w = image_size
    transform = ImageTransform(scale=1.0, offset_x=0.0, offset_y=0.0,
                               original_width=w, original_height=h)
    decoder = post_proc.Decoder.from_config(cfg, stride=stride)
    t0 = time.perf_counter()
    people = decoder(maps, transform)
    return people, (time.perf_counter() - t0) * 1e3


# ----------------------------------------------------------------------- grouping
def match_people(gt_keypoints: np.ndarray, people: Sequence[Any],
                 tol: float = 4.0) -> dict[str, int]:
    """Count GT people found whole, split, partial or missed (rule in the module docstring).

    Args:
        gt_keypoints: (G, K, 3) annotated people (v > 0 labelled).
        people: detections with ``keypoints`` (K, 3) x, y, score.
        tol: pixels within which a detection's keypoint holds a GT keypoint.
    """
    gt = np.asarray(gt_keypoints, np.float32).reshape(-1, *np.shape(gt_keypoints)[-2:])
    counts = {"whole": 0, "split": 0, "partial": 0, "missed": 0, "merged": 0}
    g = gt.shape[0]
    if g == 0:
        return counts
    labelled = gt[:, :, 2] > 0                                                  # (G, K)
    if not people:
        counts["missed"] = int(np.count_nonzero(labelled.any(axis=1)))
        return counts
    det = np.stack([np.asarray(p.keypoints, np.float32) for p in people])      # (D, K, 3)
    dist = np.linalg.norm(gt[:, None, :, :2] - det[None, :, :, :2], axis=-1)  # (G, D, K)
    holds = (dist <= tol) & labelled[:, None, :] & (det[None, :, :, 2] > 0)
    n_held = holds.sum(axis=-1)                                                 # (G, D)
    whole = (n_held == labelled.sum(axis=1)[:, None]).any(axis=1)
    touching = (n_held > 0).sum(axis=1)
    real = labelled.any(axis=1)
    counts["whole"] = int(np.count_nonzero(whole & real))
    counts["split"] = int(np.count_nonzero(~whole & (touching >= 2) & real))
    counts["partial"] = int(np.count_nonzero(~whole & (touching == 1) & real))
    counts["missed"] = int(np.count_nonzero((touching == 0) & real))
    counts["merged"] = int(np.count_nonzero((n_held > 0).sum(axis=0) >= 2))
    return counts


# -------------------------------------------------------------------------- loop
@dataclass
class OracleOutcome:
    """What :func:`run_oracle` gathers over the images."""

    image_ids: list[int] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "whole": 0, "split": 0, "partial": 0, "missed": 0, "merged": 0})
    people_per_image: list[int] = field(default_factory=list)  # annotated GT people


def oracle_image(coco: CocoKeypoints, image_id: int, cfg: Config, stride: int,
                 encoder: OracleEncoder, tol: float = 4.0) -> tuple[list, float, dict[str, int]]:
    """One image: ground truth -> exact maps -> decode; (people, decode ms, grouping counts)."""
    gt = coco.ground_truth(image_id, cfg.skeleton, cfg.codec.max_people)
    maps = encoder(pad_to_stride(gt, stride))
    people, ms = decode_timed(maps, cfg, stride, gt.image_size)
    return people, ms, match_people(gt.keypoints[:gt.num_people], people, tol)


def run_oracle(coco: CocoKeypoints, cfg: Config, stride: int,
               image_ids: Optional[Sequence[int]] = None, *, tol: float = 4.0,
               progress: bool = False) -> OracleOutcome:
    """Encode -> decode every image; gather results, decode times and grouping counts."""
    encoder = OracleEncoder(cfg, stride)
    ids = list(coco.image_ids if image_ids is None else image_ids)
    out = OracleOutcome(image_ids=ids)
    for image_id in tqdm(ids, desc=f"oracle s={stride}", disable=not progress, file=sys.stderr):
        people, ms, counts = oracle_image(coco, image_id, cfg, stride, encoder, tol)
        out.results.extend(people_to_results(people, image_id))
        out.ms.append(ms)
        out.people_per_image.append(sum(counts[k] for k in ("whole", "split", "partial", "missed")))
        for k, v in counts.items():
            out.counts[k] += v
    return out


def summarize(coco: CocoKeypoints, cfg: Config, outcome: OracleOutcome) -> dict[str, Any]:
    """COCOeval figures, decode times and grouping counts as one flat dict."""
    kp = evaluate(coco, outcome.results, "keypoints", outcome.image_ids, skeleton=cfg.skeleton)
    segm = evaluate(coco, outcome.results, "segm", outcome.image_ids, skeleton=cfg.skeleton)
    segm_ann = evaluate(coco, outcome.results, "segm", outcome.image_ids,
                        skeleton=cfg.skeleton, ignore_unannotated=True)
    ms = np.asarray(outcome.ms) if outcome.ms else np.zeros(1)
    busy = ms[np.asarray(outcome.people_per_image) > 0] if outcome.ms else ms
    busy = busy if busy.size else np.zeros(1)
    c = outcome.counts
    return {
        "AP": kp["AP"], "AP50": kp["AP50"], "AP75": kp["AP75"], "APm": kp["APm"],
        "APl": kp["APl"], "AR": kp["AR"],
        "segm_AP": segm["AP"], "segm_AP_annotated": segm_ann["AP"],
        "ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
        "ms_median_with_people": float(np.median(busy)),
        "people_whole": c["whole"], "people_split": c["split"],
        "people_partial": c["partial"], "people_missed": c["missed"],
        "detections_merged": c["merged"],
        "images": len(outcome.image_ids), "detections": len(outcome.results),
    }


# ------------------------------------------------------------------ people scaling
def _person_extent(gt: ImageGroundTruth, i: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) inclusive-exclusive box of person i's mask and labelled keypoints."""
    ys, xs = np.nonzero(gt.person_masks[i])
    kp = gt.keypoints[i][gt.keypoints[i, :, 2] > 0]
    x = np.concatenate([xs, np.floor(kp[:, 0])]).astype(int)
    y = np.concatenate([ys, np.floor(kp[:, 1])]).astype(int)
    return int(x.min()), int(y.min()), int(x.max()) + 1, int(y.max()) + 1


def pick_person(coco: CocoKeypoints, cfg: Config, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A real person as (keypoints (K, 3) relative to its box, mask crop), fitting ``cell``."""
    best, best_key = None, None
    for image_id in coco.image_ids:
        gt = coco.ground_truth(image_id, cfg.skeleton, cfg.codec.max_people)
        for i in range(gt.num_people):
            if not gt.has_mask[i]:
                continue
            x0, y0, x1, y1 = _person_extent(gt, i)
            size = max(x1 - x0, y1 - y0)
            fits = size <= cell - 8
            key = (fits, int((gt.keypoints[i, :, 2] > 0).sum()), -size if fits else size)
            if best_key is None or key > best_key:
                kps = gt.keypoints[i].copy()
                kps[:, :2] -= (x0, y0)
                kps[kps[:, 2] <= 0] = 0
                best, best_key = (kps, gt.person_masks[i, y0:y1, x0:x1].copy()), key
    if best is None:
        raise ValueError("no annotated person with a mask in the annotation file")
    kps, mask = best
    size = max(mask.shape)
    if size > cell - 8:
        scale = (cell - 8) / size
        mask = cv2.resize(mask, (max(1, round(mask.shape[1] * scale)),
                                 max(1, round(mask.shape[0] * scale))),
                          interpolation=cv2.INTER_NEAREST)
        kps[:, :2] *= scale
    return kps, mask


def people_scene(kps: np.ndarray, mask: np.ndarray, n: int, grid: int,
                 max_people: int) -> ImageGroundTruth:
    """A SCENE_SIZE^2 ground truth with ``n`` translated copies of one person on a grid."""
    cell = SCENE_SIZE // grid
    keypoints = np.zeros((max_people,) + kps.shape, np.float32)
    masks = np.zeros((max_people, SCENE_SIZE, SCENE_SIZE), np.uint8)
    mh, mw = mask.shape
    for c in range(n):
        ox = (c % grid) * cell + (cell - mw) // 2
        oy = (c // grid) * cell + (cell - mh) // 2
        keypoints[c] = kps
        keypoints[c, :, 0] += ox * (kps[:, 2] > 0)
        keypoints[c, :, 1] += oy * (kps[:, 2] > 0)
        masks[c, oy:oy + mh, ox:ox + mw] = mask
    has_mask = np.arange(max_people) < n
    empty = np.zeros((SCENE_SIZE, SCENE_SIZE), np.uint8)
    return ImageGroundTruth(
        image_id=0, keypoints=keypoints, num_people=n, person_masks=masks, has_mask=has_mask,
        crowd_mask=empty, unannotated_mask=empty.copy(), image_size=(SCENE_SIZE, SCENE_SIZE),
        areas=masks.reshape(max_people, -1).sum(axis=1).astype(np.float32),
        annotation_ids=np.where(has_mask, np.arange(max_people), -1))


def time_by_people(coco: CocoKeypoints, cfg: Config, stride: int, max_n: int,
                   repeats: int = 3, tol: float = 4.0,
                   progress: bool = False) -> tuple[dict[str, float], dict[str, int]]:
    """Decode ms (median of ``repeats``) and whole-people count for 1, 2, 4, ..., max_n copies."""
    grid = math.ceil(math.sqrt(max_n))
    kps, mask = pick_person(coco, cfg, SCENE_SIZE // grid)
    p_max = max(cfg.codec.max_people, max_n)
    cfg = replace(cfg, codec=replace(cfg.codec, max_people=p_max),
                  decoder=replace(cfg.decoder, max_people=max(cfg.decoder.max_people, max_n)))
    encoder = OracleEncoder(cfg, stride)
    counts = sorted({min(2 ** i, max_n) for i in range(max_n.bit_length() + 1)})
    scenes = {}
    for n in counts:
        gt = people_scene(kps, mask, n, grid, p_max)
        scenes[n] = (gt, encoder(pad_to_stride(gt, stride)))
    # Repeats interleave the scenes, so a slow spell of a shared machine hits them alike.
    times: dict[int, list[float]] = {n: [] for n in counts}
    people_of: dict[int, list] = {}
    for _ in tqdm(range(repeats), desc=f"people s={stride}", disable=not progress, file=sys.stderr):
        for n, (gt, maps) in scenes.items():
            people_of[n], ms = decode_timed(maps, cfg, stride, gt.image_size)
            times[n].append(ms)
    ms_by = {str(n): float(np.median(times[n])) for n in counts}
    whole_by = {str(n): match_people(scenes[n][0].keypoints[:n], people_of[n], tol)["whole"]
                for n in counts}
    return ms_by, whole_by


# -------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # one trace per map size is expected: no retracing warnings
    cfg = load_config(args.config, args.overrides)
    coco = CocoKeypoints(args.annotations)
    ids = coco.image_ids[:args.limit] if args.limit else coco.image_ids
    outcome = run_oracle(coco, cfg, args.stride, ids, tol=args.match_px, progress=True)
    summary = summarize(coco, cfg, outcome)
    summary.update({"stride": args.stride, "config": args.config or "defaults",
                    "disk_radius": cfg.codec.disk_radius,
                    "people": sum(summary[k] for k in (
                        "people_whole", "people_split", "people_partial", "people_missed"))})
    if args.people:
        ms_by, whole_by = time_by_people(coco, cfg, args.stride, args.people,
                                         args.repeats, args.match_px, progress=True)
        summary["ms_by_people"] = ms_by
        summary["whole_by_people"] = whole_by
    print(f"keypoints AP {summary['AP']:.3f} AP50 {summary['AP50']:.3f} "
          f"AP75 {summary['AP75']:.3f} AR {summary['AR']:.3f} | segm AP {summary['segm_AP']:.3f} "
          f"(annotated only {summary['segm_AP_annotated']:.3f}) | decode ms median "
          f"{summary['ms_median']:.1f} p90 {summary['ms_p90']:.1f} (with people "
          f"{summary['ms_median_with_people']:.1f}) | people whole "
          f"{summary['people_whole']} split {summary['people_split']} partial "
          f"{summary['people_partial']} missed {summary['people_missed']} of {summary['people']}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="decode_oracle.py"))
