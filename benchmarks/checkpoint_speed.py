"""Checkpoint cost: size, write and restore time of a training checkpoint, and the cost of
resuming the data stream far into a run.

    python benchmarks/checkpoint_speed.py                         # strongpose preset (ResNet-101, EMA)
    python benchmarks/checkpoint_speed.py --config tiny --starts 100000 1000000

Builds the preset's training model (network + loss, AdamW with EMA when the preset has
it), builds its optimizer, writes --repeats checkpoints with ``CheckpointManager.save``
(temporary folder, fsync, rename) and restores the last one; then times
``make_dataset(..., start=S)`` on coco-mini (or --annotations/--images) for each S: the
position search a resumed run pays before its first batch (no image is read). The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="strongpose")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--annotations", default=str(COCO_MINI / "annotations" / "person_keypoints_train2017.json"))
    ap.add_argument("--images", default=str(COCO_MINI / "train2017"))
    ap.add_argument("--starts", type=int, nargs="*", default=[10**5, 10**6])
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from strongpose import checkpoints, training
    from strongpose.config import load_config
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model

    cfg = load_config(args.config, args.overrides)
    t = time.perf_counter()
    model = training.TrainingModel(build_model(cfg, training_outputs=True),
                                   StrongPoseLoss.from_config(cfg))
    training.compile_model(model, training.build_optimizer(cfg))
    size = int(cfg.model.input_size)
    model.build((None, size, size, 3))
    model.optimizer.build(model.trainable_variables)
    build_s = time.perf_counter() - t

    result: dict = {"config": args.config, "backbone": cfg.model.backbone,
                    "ema": cfg.train.polyak_decay > 0, "build_s": round(build_s, 2),
                    "machine": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        manager = checkpoints.CheckpointManager(Path(tmp) / "checkpoints", keep=2)
        writes = []
        for step in range(1, args.repeats + 1):
            t = time.perf_counter()
            saved = manager.save(model, step * 1000, examples=step * 1000)
            writes.append(time.perf_counter() - t)
        t = time.perf_counter()
        manager.restore(model, manager.latest())
        restore_s = time.perf_counter() - t
        result.update(state_mb=round(saved.manifest["state_bytes"] / 2**20, 1),
                      weights=saved.manifest["signature"]["weights"],
                      optimizer_variables=saved.manifest["signature"]["optimizer"],
                      write_s=round(min(writes), 3), write_s_max=round(max(writes), 3),
                      restore_s=round(restore_s, 3))

        ann = Path(args.annotations)
        if ann.is_file() and args.starts:
            from strongpose.data_generator import make_dataset
            dcfg = load_config("tiny", ["model.input_size=401"])
            kw = dict(cache_dir=Path(tmp) / "cache", progress=False)
            make_dataset(dcfg, ann, args.images, **kw)               # prepare (not timed)
            for start in args.starts:
                t = time.perf_counter()
                make_dataset(dcfg, ann, args.images, start=start, **kw)
                result[f"data_start_{start}_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            make_dataset(dcfg, ann, args.images, **kw)
            result["data_start_0_s"] = round(time.perf_counter() - t, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
