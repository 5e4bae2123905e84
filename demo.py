"""Draw the people StrongPose finds in images, folders, videos or a webcam into demo_result/.

    python demo.py                                   # scikit-image's astronaut picture
    python demo.py photo.jpg holiday/ --weights runs/tiny
    python demo.py clip.mp4 --weights runs/tiny      # annotated clip.mp4 + per-frame JSON
    python demo.py 0 --max-frames 100                # webcam 0 (Ctrl-C stops and saves)
    python demo.py photo.jpg --maps                  # also the maps: photo_maps/*.jpg

For each picture, OUTPUT_DIR gets ``NAME.jpg`` (skeletons, boxes and instance masks drawn)
and ``NAME.json`` (the people: keypoints x, y, score in the picture's pixels, score, box;
a picture over 4096 pixels on a side is drawn downscaled, its JSON stays in its pixels);
with ``--maps`` also ``NAME_maps/{heatmap,hough,short,mid,long,body,masks}.jpg``. A video
or webcam gives ``NAME.mp4`` (annotated) and ``NAME.json`` (people per frame) and prints
frames/s. Only people scoring at least ``--min-score`` (default 0.2) are drawn and listed.
Files are written under a temporary name and renamed when complete. A bad input
(unreadable, truncated, not an image, too small, a video that cannot be opened) prints one
line naming it and the rest goes on; the exit status is 1 if any input failed, else 0.
WEIGHTS (default runs/tiny) is a training output folder, a weights file or a SavedModel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from strongpose import cli  # noqa: E402  (standard library only)
from strongpose.files import atomic_write  # noqa: E402  (standard library only)

DEFAULT_WEIGHTS = "runs/tiny"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
EXIT_FAILED = 1
MIN_SCORE = 0.2          # people scoring less are not drawn nor listed (the decoder keeps all for AP)
HOW_TO_GET_WEIGHTS = """no trained weights at {weights}. Train a small model first (minutes on a CPU):
    python -m strongpose.synthetic synth --train 200 --val 50
    python train.py --config tiny --data synth --train-split train {weights}
then run: python demo.py --weights {weights} [INPUT ...]
(or pass --weights a training folder, a .weights.h5 file with --config, or an exported SavedModel)"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; ``--help`` and usage errors before TensorFlow."""
    ap = cli.ArgumentParser(prog="demo.py", description=__doc__.split("\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="image, folder, video file or webcam index (none: a sample picture)")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help=f"model (default {DEFAULT_WEIGHTS})")
    ap.add_argument("--config", default=None, help="preset or YAML (default: config.yaml beside WEIGHTS)")
    ap.add_argument("--output-dir", default="demo_result", help="where results go (default demo_result/)")
    ap.add_argument("--maps", action="store_true", help="also draw the maps of each picture")
    ap.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    ap.add_argument("--scales", default="1", help="comma-separated scales on the input size")
    ap.add_argument("--input-size", type=int, default=None, help="longer side at scale 1")
    ap.add_argument("--max-frames", type=int, default=None, help="stop a video or webcam after N frames")
    ap.add_argument("--min-score", type=float, default=MIN_SCORE,
                    help=f"draw and list only people scoring at least this (default {MIN_SCORE}; 0: all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set decoder.min_person_score=0.1 (repeatable)")
    args = ap.parse_args(argv)
    try:
        args.scales = tuple(float(s) for s in args.scales.split(","))
    except ValueError:
        ap.error(f"--scales {args.scales!r}: comma-separated numbers expected")
    return args


# ------------------------------------------------------------------- writing files
def write_image(path: Path, rgb) -> Path:
    """An RGB uint8 picture as a file (JPEG/PNG by suffix), atomically."""
    import cv2

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: OpenCV could not write it")
    return atomic_write(path, write)


def write_json(path: Path, data: Any) -> Path:
    """JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, allow_nan=False)))


def people_json(people) -> list[dict[str, Any]]:
    """People as plain JSON values (keypoints as [x, y, score] rows)."""
    return [{"keypoints": [[round(float(v), 2) for v in row] for row in p.keypoints],
             "score": round(float(p.score), 4), "box": [round(float(v), 2) for v in p.box]}
            for p in people]


class Names:
    """Output names from inputs' stems, unique within a run."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, source: str) -> str:
        stem = Path(source).stem or "image"
        name, n = stem, 1
        while name in self.used:
            n += 1
            name = f"{stem}_{n}"
        self.used.add(name)
        return name


# ------------------------------------------------------------------------ inputs
def expand_inputs(inputs: Sequence[str]) -> tuple[list[Any], list[str], list[str]]:
    """(pictures: paths or (name, array), videos: paths or webcam indices, errors)."""
    from strongpose.images import is_image_file

    pictures: list[Any] = []
    videos: list[str] = []
    errors: list[str] = []
    if not inputs:
        from skimage import data
        pictures.append(("astronaut", data.astronaut()))
    for item in inputs:
        p = Path(item)
        if is_webcam(item):
            videos.append(item)
        elif p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            pictures.extend(str(f) for f in files if is_image_file(f))
            videos.extend(str(f) for f in files if f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(item)
        else:
            pictures.append(item)                # read errors are reported per picture
    return pictures, videos, errors


def confident(people, min_score: float) -> list:
    """The people scoring at least ``min_score``."""
    return [p for p in people if p.score >= min_score]


def run_pictures(predictor, pictures: list[Any], out: Path, names: Names, maps: bool,
                 failed: list[str], min_score: float = MIN_SCORE) -> int:
    """Draw every picture (people scoring at least ``min_score``); returns how many were written."""
    from strongpose.render import draw_people, render_maps

    def report(name: str, err: Exception) -> None:
        failed.append(name)
        print(f"demo.py: {err}", file=sys.stderr)

    items = [p if isinstance(p, tuple) else (p, p) for p in pictures]
    done = 0
    cfg = predictor.cfg
    for pred in predictor.predict(items, on_error=report):
        label = pred.source
        name = names(label)
        people = confident(pred.people, min_score)
        drawn = confident(pred.people_in_image(), min_score)     # a huge input is drawn downscaled
        try:
            write_image(out / f"{name}.jpg", draw_people(pred.image, drawn, cfg.skeleton))
            write_json(out / f"{name}.json", {"image": label, "width": int(pred.size[1]),
                                              "height": int(pred.size[0]),
                                              "people": people_json(people)})
            if maps and pred.maps is not None:
                panels = render_maps(pred.image, pred.maps, pred.transform, cfg.skeleton,
                                     predictor.stride, cfg.codec.disk_radius, drawn)
                folder = out / f"{name}_maps"            # drawn first: no half-filled folder
                folder.mkdir(exist_ok=True)
                for key, picture in panels.items():
                    write_image(folder / f"{key}.jpg", picture)
        except (OSError, ValueError) as err:
            report(label, err)
            continue
        done += 1
        print(f"demo.py: {label}: {len(people)} people -> {out / (name + '.jpg')}", file=sys.stderr)
    return done


def is_webcam(source: str) -> bool:
    """Whether an input names a webcam: a number that is not an existing file."""
    return source.isdigit() and not Path(source).exists()


def open_capture(source: int | str):
    """``cv2.VideoCapture(source)`` without OpenCV's own warnings (a missing camera is
    reported by the caller in one line)."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_webcams(videos: Sequence[str], failed: list[str]) -> dict[str, Any]:
    """Open every webcam among ``videos`` (before TensorFlow loads, so a missing camera
    is told at once): ``{source: capture}`` of those that opened; each that did not is
    reported in one line and added to ``failed``."""
    captures = {}
    for source in videos:
        if not is_webcam(source) or source in captures:    # named twice: opened once
            continue
        cap = open_capture(int(source))
        if cap.isOpened():
            captures[source] = cap
        else:
            cap.release()
            failed.append(f"webcam{source}")
            print(f"demo.py: webcam{source}: no camera at index {source} (or it is in use)",
                  file=sys.stderr)
    return captures


def run_video(predictor, source: str, out: Path, names: Names, max_frames: Optional[int],
              failed: list[str], min_score: float = MIN_SCORE, capture: Any = None) -> bool:
    """Annotate a video file or webcam (``capture``: already opened); returns whether it
    was opened and written.

    The video ends at its last frame, after ``max_frames``, when a camera stops giving
    frames (unplugged) or on Ctrl-C (KeyboardInterrupt, while reading or processing): in
    every case the frames so far are a complete ``NAME.mp4`` and ``NAME.json``.
    """
    import cv2

    from strongpose.render import draw_people

    webcam = is_webcam(source)
    label = f"webcam{source}" if webcam else source
    cap = capture if capture is not None else open_capture(int(source) if webcam else source)
    if not cap.isOpened():
        failed.append(label)
        why = f"no camera at index {source} (or it is in use)" if webcam else "cannot be opened as a video"
        print(f"demo.py: {label}: {why}", file=sys.stderr)
        return False
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    fps = fps if 0 < fps < 1000 else 25.0
    name = names(label)
    video_path, json_path = out / f"{name}.mp4", out / f"{name}.json"
    tmp = video_path.with_name(f".{name}.{os.getpid()}.tmp.mp4")
    writer = None
    frames: list[dict[str, Any]] = []
    start = time.perf_counter()

    def read() -> Iterator[Any]:
        count = 0
        try:
            while max_frames is None or count < max_frames:
                ok, frame = cap.read()
                if not ok or frame is None:
                    return
                count += 1
                yield frame
        except KeyboardInterrupt:
            return

    try:
        for i, pred in enumerate(predictor.predict(read(), channel_order="bgr")):
            picture = draw_people(pred.image, confident(pred.people_in_image(), min_score),
                                  predictor.cfg.skeleton)
            if writer is None:
                h, w = picture.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"{video_path}: OpenCV cannot write mp4 video here")
            writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            frames.append({"frame": i, "people": people_json(confident(pred.people, min_score))})
    except KeyboardInterrupt:
        pass
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    try:
        if not frames:
            raise ValueError(f"{label}: no frame could be read")
        os.replace(tmp, video_path)
        seconds = time.perf_counter() - start
        write_json(json_path, {"video": label, "fps": fps, "frames": frames})
    except (OSError, ValueError) as err:
        failed.append(label)
        print(f"demo.py: {err}", file=sys.stderr)
        return False
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"demo.py: {label}: {len(frames)} frames, {len(frames) / seconds:.2f} frames/s -> {video_path}",
          file=sys.stderr)
    return True


# --------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not Path(args.weights).exists():
        print(f"demo.py: {HOW_TO_GET_WEIGHTS.format(weights=args.weights)}", file=sys.stderr)
        return EXIT_FAILED
    out = Path(args.output_dir)
    pictures, videos, failed = expand_inputs(args.inputs)
    captures = open_webcams(videos, failed)
    videos = [v for v in videos if not is_webcam(v) or v in captures]
    written = 0
    try:
        if pictures or videos:
            cli.import_tensorflow()
            from strongpose.predictor import Predictor, load_network, resolve_config

            cfg = resolve_config(args.weights, args.config, args.overrides)
            network, cfg = load_network(args.weights, cfg)
            predictor = Predictor(network, cfg, input_size=args.input_size, scales=args.scales,
                                  flip=args.flip, keep_maps=args.maps)
            out.mkdir(parents=True, exist_ok=True)
            names = Names()
            if pictures:
                written += run_pictures(predictor, pictures, out, names, args.maps, failed,
                                        args.min_score)
            for video in videos:
                written += run_video(predictor, video, out, names, args.max_frames, failed,
                                     args.min_score, captures.pop(video, None))
    finally:
        for cap in captures.values():           # still open only if an error stopped the run
            cap.release()
    print(f"demo.py: {written} written to {out}/, {len(failed)} failed", file=sys.stderr)
    return EXIT_FAILED if failed or written == 0 else 0


def run() -> int:
    """The installed ``strongpose-demo`` command."""
    return cli.run(main, prog="strongpose-demo")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="demo.py"))
