"""End-to-end inference speed: images/s split into network and decoder, single-scale and
with flip, and the gain from decoding one image while the network runs the next.

    python benchmarks/inference_speed.py                          # ResNet-101 (personlab), 401 px
    python benchmarks/inference_speed.py --config tiny            # quick
    python benchmarks/inference_speed.py --weights runs/tiny      # a trained model (real decoder load)

Images are 480x640 JPEG files (synthetic people from ``strongpose.synthetic``, so a
trained model finds people; an untrained one decodes noise, the decoder's worst case),
read from disk: end to end is reading, resizing, network and decoder. Each mode (single
scale, flip) runs one image to warm up (tracing), then ``--images`` images decoding in
line and the same images decoding in a thread overlapped with the next network call
(``--repeats`` rounds interleaved, best kept). The defaults (4 images, 1 round) keep the
ResNet-101 run cheap: 18 images in all, about 60 CPU-seconds with start-up (ResNet-101 took
1.7 CPU-s per image single-scale and 3.5 with flip on a 2-core Xeon VM), so a minute or
two on 2 cores. Per mode: images/s, and per image network, decoder and other (reading,
resizing) milliseconds and CPU seconds.
The last line is one JSON object, with the machine's load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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
    ap.add_argument("--images", type=int, default=4, help="images timed per pass (default 4)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed passes per mode, in-line and overlapped interleaved; best kept (default 1)")
    ap.add_argument("overrides", nargs="*", help="config overrides")
    return ap.parse_args(argv)


def pictures(n: int, folder: Path) -> list[str]:
    """``n`` 480x640 JPEG files of drawn people in ``folder``; their paths."""
    import cv2

    from strongpose.synthetic.options import SynthOptions
    from strongpose.synthetic.scenes import render_image
    opts = SynthOptions(size=(480, 640), people=(2, 5), empty_rate=0.0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        cv2.imwrite(str(path), render_image(7, i, opts).image)       # scenes are BGR
        paths.append(str(path))
    return paths


def time_mode(predictor, images: list, overlap: bool) -> dict[str, Any]:
    """One timed pass: wall, network and decoder seconds -> images/s and ms per image."""
    from strongpose.predictor import Timing
    predictor.timing = Timing()
    cpu0, t0 = time.process_time(), time.perf_counter()
    people = sum(len(p.people) for p in predictor.predict(images, overlap=overlap))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    s = predictor.timing.summary()
    n = len(images)
    return {"images_per_s": round(n / wall, 3),
            "network_ms": round(1e3 * s["network_s"] / n, 1),
            "decoder_ms": round(1e3 * s["decode_s"] / n, 1),
            "other_ms": round(1e3 * max(0.0, wall - s["network_s"] - s["decode_s"]) / n, 1)
            if not overlap else None,
            "cpu_s_per_image": round(cpu / n, 3),
            "people_per_image": round(people / n, 2)}


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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
    out: dict[str, Any] = {"config": args.config if not args.weights else str(args.weights),
                           "backbone": cfg.model.backbone, "size": args.size or cfg.model.input_size,
                           "stride": cfg.eval_output_stride, "images": args.images,
                           "trained": bool(args.weights), "cpus": os.cpu_count(),
                           "load_start": load_average()}
    with tempfile.TemporaryDirectory(prefix="inference_speed_") as tmp:   # removed on any exit
        images = pictures(args.images, Path(tmp))
        for mode, flip in (("single", False), ("flip", True)):
            predictor = Predictor(network, cfg, input_size=args.size, flip=flip)
            list(predictor.predict(images[:1]))                     # warm-up: trace, allocate
            runs = [(time_mode(predictor, images, overlap=False), time_mode(predictor, images, overlap=True))
                    for _ in range(max(1, args.repeats))]          # interleaved: load noise hits both
            seq = max((r[0] for r in runs), key=lambda r: r["images_per_s"])
            ovl = max((r[1] for r in runs), key=lambda r: r["images_per_s"])
            out[mode] = {"sequential": seq, "overlapped": ovl,
                         "overlap_gain": round(ovl["images_per_s"] / seq["images_per_s"], 3)}
            print(f"{mode}: network {seq['network_ms']} ms + decoder {seq['decoder_ms']} ms + other "
                  f"{seq['other_ms']} ms per image; {seq['images_per_s']} images/s in line, "
                  f"{ovl['images_per_s']} overlapped (x{out[mode]['overlap_gain']})", file=sys.stderr)
    out["load_end"] = load_average()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="inference_speed.py"))
