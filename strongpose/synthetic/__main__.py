"""``python -m strongpose.synthetic OUT_DIR --train 200 --val 50``: write both splits."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from strongpose import cli

from .options import SCENE_KEYS, SCENES, SynthOptions, scene_options
from .writing import write_splits


# ------------------------------------------------------------------- command line
def _size_arg(text: str) -> tuple[int, int]:
    import argparse
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 33 or max(parts) > 4096:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected S or HxW, each side 33..4096 pixels (e.g. 257 or 193x257)")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _count_arg(text: str) -> int:
    import argparse
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a count >= 0")
    return v


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = cli.ArgumentParser(
        prog="python -m strongpose.synthetic",
        description="Write a small synthetic COCO keypoints data set (train and val splits) "
                    "of drawn people: OUT_DIR/{train,val}/*.jpg and "
                    "OUT_DIR/annotations/person_keypoints_{train,val}.json.")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="where to write (must be empty or new)")
    ap.add_argument("--train", type=_count_arg, default=200, help="train images (default 200)")
    ap.add_argument("--val", type=_count_arg, default=50, help="val images (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=_size_arg, default=(257, 257),
                    help="image size S or HxW in pixels (default 257)")
    ap.add_argument("--scenes", choices=tuple(SCENES), default="standard",
                    help="scene mix: standard (default: 1-4 people, overlaps, crowds) or "
                         "simple (the quick start's: 1-2 large people facing the camera, "
                         "no crowds); the options below override it")
    standard = SynthOptions()
    ap.add_argument("--people", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="people per non-empty image (standard: "
                         f"{standard.people[0]} {standard.people[1]})")
    ap.add_argument("--heights", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="person height as a share of the image side (standard: "
                         f"{standard.heights[0]} {standard.heights[1]})")
    for key in SCENE_KEYS[2:]:
        ap.add_argument("--" + key.replace("_", "-"), type=float, default=None,
                        help=f"(standard: {getattr(standard, key)})")
    ap.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR "
                    "(files of the same names are replaced)")
    args = ap.parse_args(argv)
    try:
        scene = scene_options(args.scenes, **{k: getattr(args, k) for k in SCENE_KEYS})
    except ValueError as err:
        ap.error(str(err))
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} is not empty (use --force to write into it)")
    t0 = time.perf_counter()
    files = write_splits(out, train=args.train, val=args.val, seed=args.seed, size=args.size,
                         progress=sys.stderr.isatty(), **scene)
    dt = time.perf_counter() - t0
    for split, path in files.items():
        print(f"{split}: {path}")
    print(f"wrote {args.train + args.val} images in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m strongpose.synthetic"))
