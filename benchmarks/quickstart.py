"""The README's quick start, timed: draw the synthetic data set, train the quickstart preset,
report its validation AP and the wall time of the whole.

    python benchmarks/quickstart.py                     # in a temporary folder
    python benchmarks/quickstart.py --output /tmp/qs train.steps=1000
    python benchmarks/quickstart.py --scenes standard --size 257 model.input_size=257

Same as ``python -m strongpose.synthetic synth --scenes simple --size 129 --train 1000
--val 50`` then ``python train.py --config quickstart runs/quickstart``, in one process (so one
TensorFlow start-up fewer). One line per validation, then the last stdout line: one JSON
object (``AP``, ``AP50``, ``seconds``: wall time from start to the final AP,
``data_seconds``, ``evaluations``: [[step, AP, seconds], ...], ``cpu_seconds``: process
CPU time, all threads).
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
from strongpose.synthetic.options import SCENE_KEYS, scene_options  # noqa: E402


def main(argv=None) -> dict:
    parser = cli.ArgumentParser(prog="quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=50)
    parser.add_argument("--output", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--scenes", default="simple", help="synthetic scene mix (SCENES)")
    parser.add_argument("--people", type=int, nargs=2, default=None, metavar=("MIN", "MAX"))
    parser.add_argument("--heights", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    parser.add_argument("--size", type=int, default=129, help="image side (default 129)")
    for key in SCENE_KEYS[2:]:                      # the rates
        parser.add_argument("--" + key.replace("_", "-"), type=float, default=None)
    args = parser.parse_args(argv)
    start, cpu0 = time.perf_counter(), time.process_time()
    from strongpose.synthetic import write_splits
    work = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="quickstart_"))
    synth = {**scene_options(args.scenes, **{k: getattr(args, k) for k in SCENE_KEYS}),
             "size": args.size}
    write_splits(work / "synth", train=args.train_images, val=args.val_images, seed=0, **synth)
    data_seconds = time.perf_counter() - start
    cli.import_tensorflow()
    import keras

    from strongpose.config import load_config
    from strongpose.training import train

    cfg = load_config(args.config, [f"data.coco_root={work / 'synth'}", *args.overrides])
    evaluations: list[list[float]] = []

    class Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if logs and "val_AP" in logs and (not evaluations or evaluations[-1][0] != step) \
                    and (step % max(cfg.train.eval_every, 1) == 0 or step == cfg.train.steps):
                evaluations.append([step, round(float(logs["val_AP"]), 4),
                                    round(time.perf_counter() - start, 1)])
                print(f"step {step}: val AP {logs['val_AP']:.3f}, AP50 {logs['val_AP50']:.3f}, "
                      f"loss {float(logs['total']):.3f}, {evaluations[-1][2]:.0f} s", flush=True)

    result = train(cfg, work / "run", verbose=0, callbacks=[Report()])
    figures = result.validation or {"AP": float("nan"), "AP50": float("nan")}
    out = {"AP": figures["AP"], "AP50": figures["AP50"], "AP75": figures.get("AP75"),
           "seconds": round(time.perf_counter() - start, 1), "data_seconds": round(data_seconds, 1),
           "cpu_seconds": round(time.process_time() - cpu0, 1), "evaluations": evaluations,
           "steps": result.steps, "images_per_s": result.images_per_second,
           "config": args.config, "overrides": list(args.overrides), "scenes": args.scenes,
           "synthetic": synth,
           "machine": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="quickstart"))
