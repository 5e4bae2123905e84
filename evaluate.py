"""Evaluate a trained StrongPose model on COCO keypoints: results JSON + the 10 COCOeval figures.

    python evaluate.py runs/tiny --data synth --split val
    python evaluate.py runs/big --data coco2017 --split val2017 --flip
    python evaluate.py runs/big --annotations my/person_keypoints.json --images my/images --limit 100
    python evaluate.py runs/big --data coco2017 --split test-dev --alg strongpose   # server file

WEIGHTS is a training output folder (``config.yaml`` + ``model.weights.h5``), a
``.weights.h5``/``.keras`` file (with ``--config`` when no ``config.yaml`` lies beside it)
or an exported SavedModel folder. With ``--data ROOT --split NAME`` the annotations are
``ROOT/annotations/person_keypoints_NAME.json`` and the images ``ROOT/NAME/``;
``--split test-dev`` reads ``ROOT/annotations/image_info_test-dev2017.json`` and the
images of ``ROOT/test2017/`` and, having no ground truth, only writes the results file
under the name the COCO server expects: ``person_keypoints_test-dev2017_<alg>_results.json``.
Otherwise the file is ``person_keypoints_<split>_<alg>_results.json`` in ``--output-dir``,
and the keypoint figures (AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl) and the
person-mask AP are printed. The last line is one JSON object (figures, images/s split into
network and decoder, the results file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strongpose import cli  # noqa: E402  (standard library only)

TEST_DEV = "test-dev"
TEST_DEV_INFO = "annotations/image_info_test-dev2017.json"
TEST_DEV_IMAGES = "test2017"
RESULTS_NAME = "person_keypoints_{split}_{alg}_results.json"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; ``--help`` and usage errors before TensorFlow."""
    ap = cli.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("weights", metavar="WEIGHTS", help="training folder, weights file or SavedModel")
    ap.add_argument("--config", default=None, help="preset or YAML (default: config.yaml beside WEIGHTS)")
    ap.add_argument("--data", default=None, help="COCO-layout folder (data.coco_root)")
    ap.add_argument("--split", default=None, help="split name (default data.val_split); 'test-dev' for the server file")
    ap.add_argument("--annotations", default=None, help="a COCO keypoints JSON (instead of --data/--split)")
    ap.add_argument("--images", default=None, help="its images folder")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (sorted ids)")
    ap.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    ap.add_argument("--scales", default="1", help="comma-separated scales on the input size (default 1)")
    ap.add_argument("--input-size", type=int, default=None, help="longer side at scale 1 (default model.input_size)")
    ap.add_argument("--batch-size", type=int, default=1, help="images per network call (same size only)")
    ap.add_argument("--checkpoint", choices=("final", "best"), default="final", help="which weights of a training folder")
    ap.add_argument("--alg", default="strongpose", help="algorithm name in the results file name")
    ap.add_argument("--output-dir", default="eval_result", help="where the results JSON goes (default eval_result/)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. decoder.peak_threshold=0.02")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.annotations and (args.data or args.split):
        ap.error("give --annotations (and --images) or --data/--split, not both")
    try:
        args.scales = tuple(float(s) for s in args.scales.split(","))
    except ValueError:
        ap.error(f"--scales {args.scales!r}: comma-separated numbers expected")
    return args


def image_list(annotation_file: Path) -> tuple[list[dict[str, Any]], bool]:
    """The images of a COCO JSON (sorted by id) and whether it holds annotations."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotation file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO file (no 'images' list)")
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    return images, "annotations" in data


def annotation_split(ann: Path) -> str:
    """The split name in a results file name for an annotation file: its stem without
    ``person_keypoints_`` / ``image_info_`` (``person_keypoints_val2017.json`` -> val2017),
    or its folder's name when nothing else is left (``my/person_keypoints.json`` -> my)."""
    stem = ann.stem
    for prefix in ("person_keypoints", "image_info"):
        if stem == prefix or stem.startswith(prefix + "_"):
            stem = stem[len(prefix) + 1:]
    return stem or ann.resolve().parent.name or "custom"


def resolve_inputs(args: argparse.Namespace, cfg) -> tuple[Path, Path, str]:
    """(annotation file, image folder, split name) from the arguments and config."""
    if args.annotations:
        ann = Path(args.annotations)
        images = Path(args.images) if args.images else ann.parent.parent / "images"
        return ann, images, annotation_split(ann)
    root = Path(args.data or cfg.data.coco_root)
    split = args.split or cfg.data.val_split
    if split == TEST_DEV:
        return root / TEST_DEV_INFO, Path(args.images or root / TEST_DEV_IMAGES), "test-dev2017"
    return (root / cfg.data.annotation_pattern.format(split=split),
            Path(args.images or root / split), split)


def predict_results(predictor, images: list[dict[str, Any]], image_dir: Path, *,
                    batch_size: int = 1, progress: bool = True,
                    keep_masks: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """Run ``predictor`` on the listed images; (COCO results, one line per failed image).
    The loop of training's validation (:func:`strongpose.validation.predict_images`)."""
    from strongpose.validation import predict_images

    pred = predict_images(predictor, [(int(im["id"]), Path(image_dir) / im["file_name"])
                                      for im in images],
                          batch_size=batch_size, keep_masks=keep_masks, progress=progress)
    return pred.results, pred.skipped


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not Path(args.weights).exists():
        raise FileNotFoundError(f"{args.weights}: no such weights file or folder (train one: "
                                f"python train.py --config tiny --data synth --train-split train runs/tiny)")
    cli.import_tensorflow()
    from strongpose.evaluation import METRIC_NAMES, evaluate, save_results
    from strongpose.predictor import Predictor, load_network, resolve_config

    cfg = resolve_config(args.weights, args.config, args.overrides)

    network, cfg = load_network(args.weights, cfg, args.checkpoint)
    ann, image_dir, split = resolve_inputs(args, cfg)
    images, has_gt = image_list(ann)
    if args.limit:
        images = images[:args.limit]
    if not images:
        raise ValueError(f"{ann}: no images to evaluate")
    test_dev = not has_gt
    if test_dev:            # the server scores keypoints only: no masks to compute
        import dataclasses
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, instance_masks=False))
    predictor = Predictor(network, cfg, input_size=args.input_size, scales=args.scales, flip=args.flip)
    results, failed = predict_results(predictor, images, image_dir, batch_size=args.batch_size,
                                      progress=not args.no_progress, keep_masks=not test_dev)
    for line in failed:
        print(f"evaluate.py: skipped {line}", file=sys.stderr)
    out = save_results(results, Path(args.output_dir) / RESULTS_NAME.format(split=split, alg=args.alg))
    summary: dict[str, Any] = {"results": str(out), "people": len(results), "failed": len(failed),
                               **predictor.timing.summary()}
    if has_gt:
        ids = [int(im["id"]) for im in images]
        kp = evaluate(ann, results, "keypoints", ids, skeleton=cfg.skeleton)
        segm = evaluate(ann, results, "segm", ids, skeleton=cfg.skeleton)
        for name in METRIC_NAMES:
            print(f"{name:5s} {kp[name]:.3f}")
        print(f"mask AP {segm['AP']:.3f}")
        summary.update(kp)
        summary["mask_AP"] = segm["AP"]
    t = predictor.timing.summary()
    print(f"{t['images']} images: {t['images_per_s']:.2f} images/s (network {t['network_images_per_s']:.2f}, "
          f"decoder {t['decoder_images_per_s']:.2f} images/s); results: {out}", file=sys.stderr)
    print(json.dumps(summary))
    return 1 if failed else 0


def run() -> int:
    """The installed ``strongpose-evaluate`` command."""
    return cli.run(main, prog="strongpose-evaluate")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="evaluate.py"))
