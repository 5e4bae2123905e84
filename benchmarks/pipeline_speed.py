"""Input pipeline speed: images/s and host core-ms per image of ``make_dataset``, where its
time goes, and the small preset's train-step rate in the same run.

    python benchmarks/pipeline_speed.py                         # ../shared/data/coco-mini, 401x401
    python benchmarks/pipeline_speed.py --annotations A.json --images DIR --batches 40
    python benchmarks/pipeline_speed.py --tfrecords             # also the TFRecord reader

Prepares the annotation file once (cached under --cache, not timed). Then:

1. Pipeline, training mode (shuffle, augmentation, empty images at --empty-rate), for each
   placement of the target encoder: ``in_pipeline`` (``with_targets=True``) and
   ``in_train_step`` (``with_targets=False``: the pipeline yields target inputs); optionally
   the same from TFRecords. --warmup batches, then --batches timed: wall time and process
   CPU time (every thread), so ``host_core_ms_per_image`` is what the pipeline costs the
   host whatever the core count. The modes run interleaved, --rounds times, best kept.
2. Stages, one thread, per image: read the files, decode the image, decode the label PNG,
   augment (jitter, warp of image and label, person masks), encode the targets: core-ms
   of each (cumulative differences).
3. Train step: the --train-config preset's network (default ``tiny``: the small backbone)
   at the same size and batch, ``fit`` on batches cached in memory, targets given
   (``bare``) and encoded in the step from target inputs (``encode_in_step``,
   ``data_generator.TrainStepTargets``): images/s after --train-warmup steps.

``pipeline_images_per_s`` and ``host_core_ms_per_image`` are the default placement's
(``data_generator.targets_in_train_step()`` here: in the pipeline on a CPU machine, in the
train step with a GPU on the TensorFlow backend); both placements are reported.
``train_images_per_s`` is the bare train step's rate. The last stdout line is one JSON
object.
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


def _time_batches(it, batches: int) -> dict:
    images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        x, _t = next(it)
        images += int(x.shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_s": images / wall, "host_core_ms_per_image": 1000.0 * cpu / images,
            "images": images, "wall_s": wall}


def _pipelines(tf, datasets: dict, batches: int, warmup: int, rounds: int) -> dict:
    """Each dataset timed ``rounds`` times, interleaved; the best round of each."""
    its = {name: iter(ds) for name, ds in datasets.items()}
    for it in its.values():
        for _ in range(warmup):
            next(it)
    best: dict = {}
    for _ in range(rounds):
        for name, it in its.items():
            r = _time_batches(it, batches)
            if name not in best or r["host_core_ms_per_image"] < best[name]["host_core_ms_per_image"]:
                best[name] = r
    return best


def _stages(tf, cfg, prepared, images_dir: Path, count: int) -> dict:
    """Core-ms per image of each stage, one thread, cumulative pipelines."""
    import numpy as np
    from strongpose.augment import Augmenter, person_masks
    from strongpose.data_generator import (decode_image_bytes, label_layout, present_people,
                                           unpack_labels)
    from strongpose.targets import TargetEncoder

    p = int(cfg.codec.max_people)
    size, stride = int(cfg.model.input_size), int(cfg.model.output_stride)
    label_dtype = tf.as_dtype(label_layout(p)[0])
    aug = Augmenter.from_config(cfg, mask_factor=stride, masks_on_grid=True,
                                make_person_masks=False)
    encoder = TargetEncoder.from_config(cfg)
    map_size = encoder.map_size_for((size, size))
    idx = np.arange(min(count, len(prepared)))
    kps = np.stack([prepared.padded_people(int(i))[0] for i in idx])
    hms = np.stack([prepared.padded_people(int(i))[2] for i in idx])
    data = {"image": [str(images_dir / f) for f in prepared.file_names[idx]],
            "label": [str(prepared.label_path(i)) if lab else ""
                      for i, lab in zip(prepared.image_ids[idx], prepared.label[idx])],
            "size": np.stack([prepared.heights[idx], prepared.widths[idx]], -1).astype(np.int32),
            "keypoints": kps, "has_mask": hms,
            "num_people": np.minimum(prepared.counts[idx], p).astype(np.int32),
            "seed": np.stack([np.zeros_like(idx), idx], -1).astype(np.int64)}

    def read(e):
        return {**e, "image": tf.io.read_file(e["image"]),
                "label": tf.cond(tf.strings.length(e["label"]) > 0,
                                 lambda: tf.io.read_file(e["label"]), lambda: tf.constant(b""))}

    def decode_image(e):
        return {**e, "image": decode_image_bytes(e["image"])}

    def decode_label(e):
        return {**e, "label": tf.cond(
            tf.strings.length(e["label"]) > 0,
            lambda: tf.io.decode_png(e["label"], channels=1, dtype=label_dtype)[..., 0],
            lambda: tf.zeros(e["size"], label_dtype))}

    def augment(e):
        out = aug({"image": e["image"], "instance_map": e["label"], "keypoints": e["keypoints"],
                   "num_people": e["num_people"]}, e["seed"])
        inst, crowd, un = unpack_labels(out["instance_map"], p)
        return {"image": out["image"], "keypoints": out["keypoints"],
                "num_people": out["num_people"], "has_mask": e["has_mask"],
                "person_masks": person_masks(inst, p), "crowd_mask": crowd,
                "unannotated_mask": un}

    def encode(e):
        return e["image"], encoder(present_people(e), map_size)

    chain = [("read_files", read), ("decode_image", decode_image),
             ("decode_label", decode_label), ("augment", augment), ("targets", encode)]
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = 1
    totals, fns = {}, []
    for name, fn in chain:
        fns.append(fn)

        def composed(e, fns=tuple(fns)):
            for f in fns:
                e = f(e)
            return e

        ds = tf.data.Dataset.from_tensor_slices(data).map(composed).with_options(opts)
        for _ in ds.take(4):
            pass
        cpu = time.process_time()
        n = 0
        for _ in range(2):
            for _ in ds:
                n += 1
        totals[name] = 1000.0 * (time.process_time() - cpu) / n
    out, previous = {}, 0.0
    for name, _ in chain:
        out[name] = totals[name] - previous
        previous = totals[name]
    out["total"] = previous
    return out


def _train_rates(tf, cfg_train, ds_targets, ds_inputs, steps: int, warmup: int) -> dict:
    """Images/s of ``fit`` steps of the preset's network: targets given, and encoded in the
    step from target inputs. Batches cached in memory (the pipeline is not timed here)."""
    import keras
    from strongpose.data_generator import TrainStepTargets
    from strongpose.losses import StrongPoseLoss
    from strongpose.model import build_model
    from strongpose.training import Throughput, TrainingModel, build_optimizer, compile_model

    out = {}
    for name, ds, encoder in (("bare", ds_targets, None),
                              ("encode_in_step", ds_inputs, TrainStepTargets.from_config(cfg_train))):
        keras.utils.set_random_seed(0)
        model = TrainingModel(build_model(cfg_train, training_outputs=True),
                              StrongPoseLoss.from_config(cfg_train), target_encoder=encoder)
        compile_model(model, build_optimizer(cfg_train, steps=warmup + steps))
        batch = int(next(iter(ds))[0].shape[0])
        throughput = Throughput(batch, skip=warmup)
        model.fit(ds.take(4).cache().repeat(), epochs=1, steps_per_epoch=warmup + steps,
                  callbacks=[throughput], verbose=0)
        out[name] = throughput.images_per_second
    return out


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
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--empty-rate", type=float, default=None)
    parser.add_argument("--tfrecords", action="store_true", help="also time the TFRecord reader")
    parser.add_argument("--stage-images", type=int, default=40,
                        help="images in the per-stage split (0: skip it)")
    parser.add_argument("--train-config", default="tiny",
                        help="preset whose train step is timed ('none' to skip)")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--train-warmup", type=int, default=2)
    args = parser.parse_intermixed_args(argv)
    tf = cli.import_tensorflow()
    from strongpose.config import load_config
    from strongpose.data_generator import make_dataset, prepare, targets_in_train_step

    cfg = load_config(args.config, list(args.overrides) + [f"model.input_size={args.size}"])
    default_in_step = targets_in_train_step()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        prepared = prepare(args.annotations, args.images, cache, skeleton=cfg.skeleton,
                           max_people=int(cfg.codec.max_people), progress=False)
        result = {"benchmark": "pipeline_speed", "config": args.config, "size": args.size,
                  "batch": args.batch, "batches": args.batches, "rounds": args.rounds,
                  "annotations": str(args.annotations), "data_images": len(prepared),
                  "skipped": len(prepared.skipped)}

        def dataset(with_targets: bool, **kw):
            return make_dataset(cfg, args.annotations, args.images, cache, training=True, seed=0,
                                batch_size=args.batch, with_targets=with_targets,
                                empty_image_rate=args.empty_rate, allow_eval_split=True,
                                prepared=kw.pop("prepared", prepared), **kw)

        datasets = {"in_pipeline": dataset(True), "in_train_step": dataset(False)}
        if args.tfrecords:
            from strongpose.tfrecords import write_tfrecords
            write_tfrecords(prepared, Path(tmp) / "tfr", progress=False)
            datasets["tfrecords_in_pipeline"] = make_dataset(
                cfg, "train", tfrecord_dir=Path(tmp) / "tfr", seed=0, batch_size=args.batch,
                empty_image_rate=args.empty_rate, progress=False)
        modes = _pipelines(tf, datasets, args.batches, args.warmup, args.rounds)
        stages = (_stages(tf, cfg, prepared, Path(args.images), args.stage_images)
                  if args.stage_images > 0 else None)
        train = None
        if args.train_config != "none":
            cfg_train = load_config(args.train_config, [f"model.input_size={args.size}"])
            prep_t = prepare(args.annotations, args.images, cache, skeleton=cfg_train.skeleton,
                             max_people=int(cfg_train.codec.max_people), progress=False)
            kw = dict(training=True, seed=0, batch_size=args.batch, allow_eval_split=True,
                      prepared=prep_t, progress=False)
            train = _train_rates(tf, cfg_train,
                                 make_dataset(cfg_train, args.annotations, args.images, cache, **kw),
                                 make_dataset(cfg_train, args.annotations, args.images, cache,
                                              with_targets=False, **kw),
                                 args.train_steps, args.train_warmup)
    default = "in_train_step" if default_in_step else "in_pipeline"
    result["targets_default_placement"] = default
    result["pipeline_images_per_s"] = modes[default]["images_per_s"]
    result["host_core_ms_per_image"] = modes[default]["host_core_ms_per_image"]
    for name, r in modes.items():
        result[f"pipeline_images_per_s_{name}"] = r["images_per_s"]
        result[f"host_core_ms_per_image_{name}"] = r["host_core_ms_per_image"]
    result["modes"] = modes
    result["stage_core_ms_per_image"] = stages
    result["train_config"] = args.train_config
    result["train_images_per_s"] = train["bare"] if train else None
    result["train_images_per_s_encode_in_step"] = train["encode_in_step"] if train else None
    if train and train["bare"]:
        result["pipeline_over_train"] = result["pipeline_images_per_s"] / train["bare"]
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cpu, tf {tf.__version__}"
    result["load_average"] = os.getloadavg()[0]
    result["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="pipeline_speed"))
