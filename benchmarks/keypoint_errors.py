"""Where a trained model's keypoints go wrong: per-keypoint errors against the ground truth.

    python benchmarks/keypoint_errors.py runs/quickstart                  # val, first 50 images
    python benchmarks/keypoint_errors.py runs/quickstart --split train --images 100
    python benchmarks/keypoint_errors.py runs/x --checkpoint final decoder.snap_steps=0

The run's best weights (``--checkpoint``) predict the first ``--images`` images of
``--split`` through the :class:`~strongpose.predictor.Predictor` (as ``evaluate.py``).
Each annotated person (not crowd, at least one labelled keypoint) is paired with the
predicted person of the same image whose OKS with it is highest (COCO's OKS: the
config's per-keypoint sigmas, the annotation's ``area``), and each labelled keypoint's
error is measured: its distance in pixels and in % of ``sqrt(area)``, and its OKS term
``exp(-d^2 / (2 area (2 sigma)^2))``. Printed per keypoint: the median and 90th
percentile of the error in %, the median in pixels, the share of keypoints more than
``--far`` pixels off (default 8: a wrong limb, not imprecision), the mean OKS term, and
the error COCO allows for an OKS term of 0.9. Then the people's OKS quantiles and the
share of people at OKS >= 0.5 / 0.75 / 0.85 / 0.9 / 0.95 (AP at threshold t is at most
that share). The last stdout line is one JSON object.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from strongpose import cli  # noqa: E402

OKS_LEVELS = (0.5, 0.75, 0.85, 0.9, 0.95)


@dataclass
class PairedErrors:
    """Errors of annotated people against their best-OKS predictions.

    ``oks``: (P,) each person's OKS (0 without a prediction); ``distance``, ``relative``
    (% of sqrt(area)) and ``term`` (OKS term): (P, K), NaN where the keypoint is unlabelled
    or the person has no prediction (``term`` is 0 there when labelled)."""

    oks: np.ndarray
    distance: np.ndarray
    relative: np.ndarray
    term: np.ndarray


def pair_errors(truths: Sequence[tuple[np.ndarray, float]], predictions: Sequence[Sequence[np.ndarray]],
                sigmas: np.ndarray) -> PairedErrors:
    """Pair each annotated person with its image's best-OKS prediction and measure errors.

    Args:
        truths: per person ``(keypoints (K, 3) x, y, v; area)``.
        predictions: per person, the predicted keypoints ``(K, >=2)`` of its image.
        sigmas: (K,) COCO per-keypoint sigmas.
    """
    sigmas = np.asarray(sigmas, np.float64)
    k = sigmas.size
    n = len(truths)
    oks = np.zeros(n)
    distance = np.full((n, k), np.nan)
    term = np.full((n, k), np.nan)
    area = np.zeros(n)
    for i, ((gt, a), preds) in enumerate(zip(truths, predictions)):
        gt = np.asarray(gt, np.float64)
        if gt.shape != (k, 3):
            raise ValueError(f"person {i}: ground truth of shape {gt.shape}, expected ({k}, 3)")
        area[i] = max(float(a), 1e-9)
        labelled = gt[:, 2] > 0
        if not labelled.any():
            raise ValueError(f"person {i}: no labelled keypoint")
        term[i, labelled] = 0.0
        best = -1.0
        for p in preds:
            d2 = ((np.asarray(p, np.float64)[:, :2] - gt[:, :2]) ** 2).sum(1)
            e = np.exp(-d2 / (2 * area[i] * (2 * sigmas) ** 2))
            o = float(e[labelled].mean())
            if o > best:
                best = o
                distance[i] = np.where(labelled, np.sqrt(d2), np.nan)
                term[i] = np.where(labelled, e, np.nan)
        oks[i] = max(best, 0.0)
    relative = distance / np.sqrt(area)[:, None] * 100.0
    return PairedErrors(oks=oks, distance=distance, relative=relative, term=term)


def summarise(errors: PairedErrors, names: Sequence[str], sigmas: np.ndarray,
              far: float = 8.0) -> dict:
    """Per-keypoint and per-person figures of :func:`pair_errors` (see the module doc)."""
    out: dict = {"people": int(errors.oks.size), "keypoints": {}}
    if errors.oks.size:
        out["oks_quantiles"] = {str(q): round(float(np.quantile(errors.oks, q)), 4)
                                for q in (0.1, 0.25, 0.5, 0.75, 0.9)}
        out["oks_at_least"] = {str(t): round(float((errors.oks >= t).mean()), 4) for t in OKS_LEVELS}
    allowed = math.sqrt(-2 * math.log(0.9)) * 2 * np.asarray(sigmas) * 100.0
    for j, name in enumerate(names):
        term = errors.term[:, j]
        labelled = ~np.isnan(term)
        rel = errors.relative[:, j][~np.isnan(errors.relative[:, j])]
        dist = errors.distance[:, j][~np.isnan(errors.distance[:, j])]
        if not labelled.any():
            continue
        out["keypoints"][name] = {
            "n": int(labelled.sum()),
            "median_pct": round(float(np.median(rel)), 2) if rel.size else None,
            "p90_pct": round(float(np.quantile(rel, 0.9)), 2) if rel.size else None,
            "median_px": round(float(np.median(dist)), 2) if dist.size else None,
            "far_share": round(float((dist > far).mean()), 3) if dist.size else None,
            "mean_oks_term": round(float(term[labelled].mean()), 3),
            "allowed_pct_for_0.9": round(float(allowed[j]), 2),
        }
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = cli.ArgumentParser(prog="keypoint_errors", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a training run folder (or weights file)")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    parser.add_argument("--split", default=None, help="data split (default: the config's val split)")
    parser.add_argument("--images", type=int, default=50, help="first N images (default 50)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "final"))
    parser.add_argument("--far", type=float, default=8.0, help="pixels beyond which a keypoint counts as far off")
    args = parser.parse_args(argv)
    cli.import_tensorflow()
    from strongpose.predictor import Predictor, load_network, resolve_config
    from strongpose.validation import split_images

    cfg = resolve_config(args.run, None, args.overrides)
    network, cfg = load_network(args.run, cfg, args.checkpoint)
    predictor = Predictor(network, cfg)
    coco, ids, missing = split_images(cfg, args.split or cfg.data.val_split, None, args.images)
    for line in missing:
        print(f"keypoint_errors: {line}", file=sys.stderr)
    truths, predictions = [], []
    for image_id in ids:
        people = predictor(str(coco.image_path(image_id)))
        guesses = [p.keypoints for p in people]
        for ann in coco.annotations(image_id):
            gt = np.asarray(ann.get("keypoints", []), np.float64).reshape(-1, 3)
            if ann.get("iscrowd") or not gt.size or not (gt[:, 2] > 0).any():
                continue
            truths.append((gt, float(ann["area"])))
            predictions.append(guesses)
    sigmas = np.asarray(cfg.skeleton.sigmas, np.float64)
    names = list(cfg.skeleton.names)
    summary = summarise(pair_errors(truths, predictions, sigmas), names, sigmas, args.far)
    print(f"{'keypoint':15s} {'n':>4s} {'med %':>6s} {'p90 %':>6s} {'med px':>6s} "
          f"{'far':>5s} {'OKS term':>8s} {'0.9 allows %':>12s}")
    for name, row in summary["keypoints"].items():
        print(f"{name:15s} {row['n']:4d} {row['median_pct']:6.2f} {row['p90_pct']:6.2f} "
              f"{row['median_px']:6.2f} {row['far_share']:5.2f} {row['mean_oks_term']:8.3f} "
              f"{row['allowed_pct_for_0.9']:12.2f}")
    if summary["people"]:
        print(f"{summary['people']} people; OKS quantiles {summary['oks_quantiles']}; "
              f"share at OKS >= t: {summary['oks_at_least']}")
    summary.update(run=str(args.run), split=args.split or cfg.data.val_split, images=len(ids),
                   checkpoint=args.checkpoint)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="keypoint_errors.py"))
