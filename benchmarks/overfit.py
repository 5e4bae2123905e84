"""Proof that the chain learns on real images: train from scratch on 8 coco-mini images
(no augmentation) and report COCO keypoint AP on those same images after each phase.

    python benchmarks/overfit.py                              # ../shared/data/coco-mini
    python benchmarks/overfit.py --phases 2 --phase-steps 10  # a smoke run
    python benchmarks/overfit.py --size 401 train.learning_rate=0.003

The first ``--images`` images of the annotation file (by id) that hold an annotated person
are written as a split ``overfit`` of a COCO-layout folder (links to the images); then
``strongpose.training.train`` runs ``--phases x --phase-steps`` steps on it (the
``--config`` preset with the tiny settings of ``OVERFIT_SETTINGS``; identity-mode crops,
the Predictor's own input: no augmentation, no empty images) with
validation on the same split after every phase (``train.eval_every``: the whole chain of
``train.py``: network, robust decoder, COCOeval). One line per phase, then the last stdout
line: one JSON object (``AP``, ``AP50``, ``seconds``: wall time of the whole run,
``phases``: [[step, AP, seconds], ...], ``images``, ``people``, ``config``).
Idle 2-core VM, 2026-11-27: AP 0.80 after 500 steps, 0.843 after the default 800, 305 s.
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
SPLIT = "overfit"


# The settings that met the goal (AP 0.91 at step 500), kept here so that tuning the
# quickstart preset for the drawn data does not change this benchmark (it did once:
# small backbone, batch 8, lr 0.01 gave AP 0.43 at step 500).
OVERFIT_SETTINGS = ("model.backbone=tiny", "train.batch_size=4", "train.learning_rate=0.004",
                    "train.warmup_steps=50")


def write_subset(annotation_file: Path, image_dir: Path, root: Path, count: int) -> dict:
    """The first ``count`` images with an annotated person as ``root``'s split ``overfit``
    (JSON + symlinked images); the subset's image and people counts."""
    data = json.loads(Path(annotation_file).read_text())
    with_people = sorted({a["image_id"] for a in data["annotations"]
                          if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0})
    keep = set(with_people[:count])
    if len(keep) < count:
        raise ValueError(f"{annotation_file}: only {len(keep)} images hold an annotated person")
    images = [im for im in data["images"] if im["id"] in keep]
    anns = [a for a in data["annotations"] if a["image_id"] in keep]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / SPLIT).mkdir(exist_ok=True)
    for im in images:
        link = root / SPLIT / im["file_name"]
        if not link.exists():
            os.symlink((Path(image_dir) / im["file_name"]).resolve(), link)
    subset = {**data, "images": images, "annotations": anns}
    (root / "annotations" / f"person_keypoints_{SPLIT}.json").write_text(json.dumps(subset))
    people = sum(1 for a in anns if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0)
    return {"images": len(images), "people": people}


def main(argv=None) -> dict:
    parser = cli.ArgumentParser(prog="overfit", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="quickstart", help="preset (default: quickstart)")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    parser.add_argument("--annotations", default=str(COCO_MINI / "annotations" /
                                                     "person_keypoints_train2017.json"))
    parser.add_argument("--images-dir", default=str(COCO_MINI / "train2017"))
    parser.add_argument("--images", type=int, default=8, help="images to overfit (default 8)")
    parser.add_argument("--size", type=int, default=321,
                        help="input size (default 321: exact target maps of the 8 images "
                             "decode to AP 0.92 there, 0.85 at 257, 0.97 at 401)")
    parser.add_argument("--phases", type=int, default=8)
    parser.add_argument("--phase-steps", type=int, default=100)
    parser.add_argument("--output", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cli.import_tensorflow()
    import keras

    from strongpose.config import load_config
    from strongpose.data_generator import make_dataset
    from strongpose.training import train

    work = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="overfit_"))
    counts = write_subset(Path(args.annotations), Path(args.images_dir), work / "data",
                          args.images)
    steps = args.phases * args.phase_steps
    cfg = load_config(args.config, [
        f"data.coco_root={work / 'data'}", f"data.train_split={SPLIT}",
        f"data.val_split={SPLIT}", f"train.steps={steps}", f"model.input_size={args.size}",
        f"train.checkpoint_every={steps}", f"train.eval_every={args.phase_steps}",
        f"train.eval_images={args.images}", "train.tensorboard=false",
        *OVERFIT_SETTINGS, *args.overrides])
    ds = make_dataset(cfg, SPLIT, cache_dir=work / "run" / "data_cache", training=True,
                      augment=False, empty_image_rate=0.0, seed=args.seed, progress=False)
    phases: list[list[float]] = []

    class Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if logs and "val_AP" in logs and (not phases or phases[-1][0] != step) \
                    and step % args.phase_steps == 0:
                phases.append([step, round(float(logs["val_AP"]), 4),
                               round(time.perf_counter() - start, 1)])
                print(f"step {step}: AP {logs['val_AP']:.3f}, AP50 {logs['val_AP50']:.3f}, "
                      f"loss {float(logs['total']):.3f}, {phases[-1][2]:.0f} s", flush=True)

    result = train(cfg, work / "run", dataset=ds, seed=args.seed, verbose=0,
                   callbacks=[Report()])
    figures = result.validation or {"AP": float("nan"), "AP50": float("nan")}
    out = {"AP": figures["AP"], "AP50": figures["AP50"],
           "seconds": round(time.perf_counter() - start, 1), "phases": phases,
           "steps": steps, "images": counts["images"], "people": counts["people"],
           "config": args.config, "overrides": list(args.overrides),
           "input_size": cfg.model.input_size, "batch_size": cfg.train.batch_size,
           "images_per_s": result.images_per_second, "machine": platform.processor() or
           platform.machine(), "cores": os.cpu_count()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="overfit"))
