"""End-to-end inference speed: images/s split into network and decoder, single-scale and
with flip, and the gain from decoding one image while the network runs the next.

    python benchmarks/inference_speed.py                          # ResNet-101 (personlab), 401 px
    python benchmarks/inference_speed.py --config tiny --images 8 # quick
    python benchmarks/inference_speed.py --weights runs/tiny      # a trained model (real decoder load)

Images are 480x640 pictures (synthetic people from ``strongpose.synthetic``, so a
trained model finds people; an untrained one decodes noise, the decoder's worst case).
Each mode runs once to warm up (tracing), then over ``--images`` images twice: decoding
in line (sequential) and decoding in a thread overlapped with the next network call. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strongpose import cli  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = cli.ArgumentParser(prog="inference_speed.py", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="personlab", help="preset or YAML (default personlab)")
    ap.add_argument("--weights", default=None, help="trained model (folder or file); default: untrained")
    ap.add_argument("--size", type=int, default=None, help="input size (default model.input_size)")
    ap.add_argument("--images", type=int, default=10, help="images timed per run (default 10)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="timed passes per mode, in-line and overlapped interleaved; best kept (default 2)")
    ap.add_argument("overrides", nargs="*", help="config overrides")
    return ap.parse_args(argv)


def pictures(n: int) -> list:
    """``n`` 480x640 RGB pictures of drawn people."""
    from strongpose.synthetic.options import SynthOptions
    from strongpose.synthetic.scenes import render_image
    opts = SynthOptions(size=(480, 640), people=(2, 5), empty_rate=0.0)
    return [render_image(7, i, opts).image[..., ::-1].copy() for i in range(n)]   # BGR -> RGB


def time_mode(predictor, images: list, overlap: bool) -> dict[str, Any]:
    """One timed pass: wall, network and decoder seconds -> images/s."""
    from strongpose.predictor import Timing
    predictor.timing = Timing()
    t0 = time.perf_counter()
    people = sum(len(p.people) for p in predictor.predict(images, overlap=overlap))
    wall = time.perf_counter() - t0
    s = predictor.timing.summary()
    return {"images_per_s": round(len(images) / wall, 3),
            "network_ms": round(1e3 * s["network_s"] / len(images), 1),
            "decoder_ms": round(1e3 * s["decode_s"] / len(images), 1),
            "people_per_image": round(people / len(images), 2)}


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    cli.import_tensorflow()
    from strongpose.config import load_config
    from strongpose.predictor import Predictor, load_keras_model, keras_network, load_network, resolve_config

    if args.weights:
        cfg = resolve_config(args.weights, None, args.overrides)
        network, cfg = load_network(args.weights, cfg)
    else:
        cfg = load_config(args.config, args.overrides)
        network = keras_network(load_keras_model(cfg, None))
    images = pictures(args.images)
    out: dict[str, Any] = {"config": args.config if not args.weights else str(args.weights),
                           "backbone": cfg.model.backbone, "size": args.size or cfg.model.input_size,
                           "stride": cfg.eval_output_stride, "images": args.images,
                           "trained": bool(args.weights)}
    for mode, flip in (("single", False), ("flip", True)):
        predictor = Predictor(network, cfg, input_size=args.size, flip=flip)
        list(predictor.predict(images[:1]))                     # warm-up: trace, allocate
        runs = [(time_mode(predictor, images, overlap=False), time_mode(predictor, images, overlap=True))
                for _ in range(max(1, args.repeats))]          # interleaved: load noise hits both
        seq = max((r[0] for r in runs), key=lambda r: r["images_per_s"])
        ovl = max((r[1] for r in runs), key=lambda r: r["images_per_s"])
        out[mode] = {"sequential": seq, "overlapped": ovl,
                     "overlap_gain": round(ovl["images_per_s"] / seq["images_per_s"], 3)}
        print(f"{mode}: network {seq['network_ms']} ms + decoder {seq['decoder_ms']} ms per image; "
              f"{seq['images_per_s']} images/s in line, {ovl['images_per_s']} overlapped "
              f"(x{out[mode]['overlap_gain']})", file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="inference_speed.py"))
