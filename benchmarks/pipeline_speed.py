"""Input pipeline speed: images/s and host core-ms per image of ``make_dataset`` alone.

    python benchmarks/pipeline_speed.py                         # ../shared/data/coco-mini, 401x401
    python benchmarks/pipeline_speed.py --annotations A.json --images DIR --batches 40

Prepares the annotation file once (cached under --cache, not timed), then for each mode
(targets in the pipeline, and without targets: encoding left to the train step) runs
--warmup batches, then times --batches batches: wall time and process CPU time (every
thread of the process, so ``host_core_ms_per_image`` is what the pipeline costs the host
whatever the core count). Training mode (shuffle, augmentation, empty images at
--empty-rate). The last stdout line is one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strongpose import cli  # noqa: E402

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"


def _time_mode(ds, batches: int, warmup: int) -> dict:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        x, _t = next(it)
        images += int(x.shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_s": images / wall, "host_core_ms_per_image": 1000.0 * cpu / images,
            "images": images, "wall_s": wall}


def main(argv=None) -> dict:
    parser = cli.ArgumentParser(prog="pipeline_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="personlab")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    parser.add_argument("--annotations", default=str(COCO_MINI / "annotations" /
                                                     "person_keypoints_train2017.json"))
    parser.add_argument("--images", default=str(COCO_MINI / "train2017"))
    parser.add_argument("--cache", default=None, help="cache folder (default: a temporary one)")
    parser.add_argument("--size", type=int, default=401)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--empty-rate", type=float, default=None)
    args = parser.parse_args(argv)
    tf = cli.import_tensorflow()
    from strongpose.config import load_config
    from strongpose.data_generator import make_dataset, prepare

    cfg = load_config(args.config, list(args.overrides) + [f"model.input_size={args.size}"])
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        prepared = prepare(args.annotations, args.images, cache, skeleton=cfg.skeleton,
                           max_people=int(cfg.codec.max_people), progress=False)
        result = {"benchmark": "pipeline_speed", "config": args.config, "size": args.size,
                  "batch": args.batch, "batches": args.batches,
                  "annotations": str(args.annotations), "data_images": len(prepared),
                  "skipped": len(prepared.skipped)}
        modes = {}
        for name, with_targets in (("with_targets", True), ("without_targets", False)):
            ds = make_dataset(cfg, args.annotations, args.images, cache, training=True, seed=0,
                              batch_size=args.batch, with_targets=with_targets,
                              empty_image_rate=args.empty_rate, allow_eval_split=True,
                              prepared=prepared)
            modes[name] = _time_mode(ds, args.batches, args.warmup)
    result["pipeline_images_per_s"] = modes["with_targets"]["images_per_s"]
    result["host_core_ms_per_image"] = modes["with_targets"]["host_core_ms_per_image"]
    result["pipeline_images_per_s_without_targets"] = modes["without_targets"]["images_per_s"]
    result["host_core_ms_per_image_without_targets"] = \
        modes["without_targets"]["host_core_ms_per_image"]
    result["modes"] = modes
    result["train_step_images_per_s"] = None      # to be filled by the training benchmark
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cpu, tf {tf.__version__}"
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="pipeline_speed"))
