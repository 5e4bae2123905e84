"""This decoder against another one (a git revision's), on the same exact maps, interleaved.

    python benchmarks/decode_compare.py --against bd471c7 \
        --annotations ../shared/data/coco-mini/annotations/person_keypoints_train2017.json

A shared machine's speed drifts by 2x over minutes, so two runs of
``benchmarks/decode_oracle.py`` at different times compare badly. This script loads the
other decoder (``strongpose/post_proc.py`` or the ``strongpose/post_proc/`` package of
the revision ``--against``, under another module name; it must offer ``decode(maps, *,
skeleton, stride, disk_radius, cfg, transform)``), builds the exact maps once
(``decode_oracle.OracleEncoder``: every image of the annotation file, and the
``--people`` scenes of 1, 2, 4, ..., N copies of one person), and times both decoders
on every map in turn, ``--repeats`` rounds (maps in a new random order each round). Figures per decoder: the median over images
of each image's median ms (``ms_median``), the same over images with people, the median
ms of each people scene (``ms_by_people``) and ``ratio``: N people over one person.

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import atexit
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from strongpose import cli  # noqa: E402  (standard library only: --help stays fast)


def parse_args(argv: Optional[Sequence[str]] = None):
    ap = cli.ArgumentParser(prog="decode_compare.py", description=__doc__.split("\n")[0])
    ap.add_argument("--against", required=True, help="git revision of the other decoder")
    ap.add_argument("--annotations", required=True, help="COCO keypoints JSON")
    ap.add_argument("--stride", type=int, default=8, choices=(8, 16))
    ap.add_argument("--people", type=int, default=32, help="largest people scene (0: none)")
    ap.add_argument("--repeats", type=int, default=7, help="rounds over every map")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--config", default=None, help="preset name or YAML path")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. decoder.nms_radius=8")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.people < 0 or args.limit < 0:
        ap.error("--repeats must be >= 1, --people and --limit >= 0")
    return args


def load_other_decoder(revision: str) -> ModuleType:
    """The ``strongpose.post_proc`` of a git revision, imported as ``_other_post_proc``."""
    def git(*cmd: str) -> bytes:
        out = subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True)
        if out.returncode:
            raise ValueError(f"git {' '.join(cmd)}: {out.stderr.decode().strip()}")
        return out.stdout

    name = "_other_post_proc"
    tree = git("ls-tree", "--name-only", revision, "strongpose/").decode().split()
    tmp = Path(tempfile.mkdtemp(prefix="decode_compare_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    if "strongpose/post_proc.py" in tree:
        (tmp / "post_proc.py").write_bytes(git("show", f"{revision}:strongpose/post_proc.py"))
        spec = importlib.util.spec_from_file_location(name, tmp / "post_proc.py")
    elif "strongpose/post_proc" in tree:
        with tarfile.open(fileobj=io.BytesIO(git("archive", revision, "strongpose/post_proc"))) as tar:
            tar.extractall(tmp)                    # our own repository's files
        package = tmp / "strongpose" / "post_proc"
        spec = importlib.util.spec_from_file_location(
            name, package / "__init__.py", submodule_search_locations=[str(package)])
    else:
        raise ValueError(f"revision {revision} has no strongpose/post_proc")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                     # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    import numpy as np
    from tqdm import tqdm

    from strongpose import post_proc
    from strongpose.coco import CocoKeypoints, pad_to_stride
    from strongpose.config import load_config
    from strongpose.geometry import ImageTransform

    other = load_other_decoder(args.against)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import decode_oracle as oracle     # its encoder and people scenes
    cfg = load_config(args.config, args.overrides)
    coco = CocoKeypoints(args.annotations)
    encoder = oracle.OracleEncoder(cfg, args.stride)
    ids = coco.image_ids[:args.limit] if args.limit else coco.image_ids
    maps: dict[str, tuple[dict, tuple[int, int], bool]] = {}
    for image_id in tqdm(ids, desc="encode", file=sys.stderr):
        gt = coco.ground_truth(image_id, cfg.skeleton, cfg.codec.max_people)
        maps[f"image {image_id}"] = (encoder(pad_to_stride(gt, args.stride)), gt.image_size,
                                     bool((gt.keypoints[:gt.num_people, :, 2] > 0).any()))
    decoder_cfg = cfg.decoder
    counts: list[int] = []
    if args.people:
        grid = int(np.ceil(np.sqrt(args.people)))
        kps, mask = oracle.pick_person(coco, cfg, oracle.SCENE_SIZE // grid)
        p_max = max(cfg.codec.max_people, args.people)
        scene_encoder = oracle.OracleEncoder(
            replace(cfg, codec=replace(cfg.codec, max_people=p_max)), args.stride)
        decoder_cfg = replace(cfg.decoder, max_people=max(cfg.decoder.max_people, args.people))
        counts = sorted({min(2 ** i, args.people) for i in range(args.people.bit_length() + 1)})
        for n in counts:
            gt = oracle.people_scene(kps, mask, n, grid, p_max)
            maps[f"people {n}"] = (scene_encoder(pad_to_stride(gt, args.stride)), gt.image_size, True)

    decoders: dict[str, Callable] = {"this": post_proc.decode, args.against: other.decode}
    times: dict[str, dict[str, list[float]]] = {d: {key: [] for key in maps} for d in decoders}
    rng = np.random.default_rng(0)
    keys = list(maps)
    for _ in tqdm(range(args.repeats), desc="rounds", file=sys.stderr):
        for key in rng.permutation(keys):                # no map always follows the same one
            m, (h, w), _ = maps[key]
            t = ImageTransform(original_width=w, original_height=h)
            for name, decode in decoders.items():
                c = decoder_cfg if key.startswith("people") else cfg.decoder
                t0 = time.perf_counter()
                decode(m, skeleton=cfg.skeleton, stride=args.stride,
                       disk_radius=cfg.codec.disk_radius, cfg=c, transform=t)
                times[name][key].append((time.perf_counter() - t0) * 1e3)

    summary: dict[str, Any] = {"against": args.against, "stride": args.stride,
                               "repeats": args.repeats, "images": len(ids)}
    for name in decoders:
        med = {key: float(np.median(v)) for key, v in times[name].items()}
        images = [med[f"image {i}"] for i in ids]
        with_people = [med[k] for k, (_, _, people) in maps.items() if k.startswith("image") and people]
        row: dict[str, Any] = {"ms_median": float(np.median(images)),
                               "ms_median_with_people": float(np.median(with_people)) if with_people else None}
        if counts:
            row["ms_by_people"] = {str(n): med[f"people {n}"] for n in counts}
            row["ratio"] = med[f"people {counts[-1]}"] / med["people 1"]
        summary[name] = row
        print(f"{name:>12}: ms median {row['ms_median']:.2f} (with people "
              f"{row['ms_median_with_people'] or 0:.2f})"
              + (f" | people {counts[-1]}: {row['ratio']:.2f}x one person" if counts else ""),
              file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="decode_compare.py"))
