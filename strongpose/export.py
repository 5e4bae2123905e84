"""Export a trained network for serving: a SavedModel (image batch -> maps) and a TFLite file.

    python -m strongpose.export runs/tiny exported/               # SavedModel + config.yaml
    python -m strongpose.export runs/tiny exported/ --tflite      # + exported/model.tflite

The SavedModel's signatures take a batch of RGB images ``(B, s*n+1, s*m+1, 3)``:
``serving_default`` float32 0..255, ``serving_uint8`` uint8; both return the network's
maps (``heatmap_logits``, ``short``, ``mid``, ``long``, ``body_logits``: logits and
offsets in input pixels, as ``strongpose.model``). They feed the same decoder with no
rewrite: ``Decoder.from_config(cfg).decode_outputs(outputs, transforms)``, and
``Predictor.load("exported/")`` runs the SavedModel with resizing, flip and scales. The
TFLite file holds one fixed input size, ``(1, S, S, 3)`` float32 with ``S`` =
``model.input_size`` (``--tflite-size``): pad an image to it as the Predictor does.
``config.yaml`` beside them is the config the maps are decoded with.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from strongpose import cli
from strongpose.files import atomic_write

SAVED_MODEL_DIR = "."               # the SavedModel is the output folder itself
TFLITE_FILE = "model.tflite"
CONFIG_FILE = "config.yaml"
INPUT_NAME = "images"


def _serving_fns(model, keys: Sequence[str]):
    import tensorflow as tf

    def maps(images):
        out = model(images, training=False)
        return {k: out[k] for k in keys}

    def from_float(images):
        return maps(images)

    def from_uint8(images):
        return maps(tf.cast(images, tf.float32))

    return from_float, from_uint8


def export_saved_model(model, cfg, out_dir: str | Path) -> Path:
    """Write ``model`` (the inference network, dict outputs) as a SavedModel with
    ``serving_default`` (float32) and ``serving_uint8`` signatures, plus ``config.yaml``."""
    import keras
    import tensorflow as tf
    import yaml

    from strongpose.maps import OUTPUT_KEYS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from_float, from_uint8 = _serving_fns(model, OUTPUT_KEYS)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", from_float,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT_NAME)])
    archive.add_endpoint("serving_uint8", from_uint8,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name=INPUT_NAME)])
    archive.write_out(str(out), verbose=False)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return out


def export_tflite(model, out_path: str | Path, size: int) -> Path:
    """Write ``model`` as a TFLite flat buffer (built-in ops only) with one fixed input
    ``(1, size, size, 3)`` float32, converted from a fixed-size SavedModel."""
    import tempfile

    import keras
    import tensorflow as tf

    from strongpose.maps import OUTPUT_KEYS

    from_float, _ = _serving_fns(model, OUTPUT_KEYS)
    with tempfile.TemporaryDirectory() as tmp_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", from_float, input_signature=[
            tf.TensorSpec((1, size, size, 3), tf.float32, name=INPUT_NAME)])
        archive.write_out(tmp_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        data = converter.convert()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out_path, lambda tmp: tmp.write_bytes(data))


def tflite_maps(path: str | Path, images) -> dict:
    """Run a TFLite file written by :func:`export_tflite` on ``images`` (1, S, S, 3) float32."""
    import numpy as np
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    return {k: np.asarray(v) for k, v in runner(**{INPUT_NAME: np.asarray(images, np.float32)}).items()}


def export(source: str | Path, out_dir: str | Path, cfg=None, *, tflite: bool = False,
           tflite_size: Optional[int] = None, checkpoint: str = "final") -> dict[str, Path]:
    """Load a trained model (training folder or weights file) and write its exports."""
    from strongpose.predictor import find_weights, load_keras_model, resolve_config

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file or folder")
    cfg = cfg or resolve_config(path)
    weights = find_weights(path, checkpoint) if path.is_dir() else path
    model = load_keras_model(cfg, weights)
    done = {"saved_model": export_saved_model(model, cfg, out_dir)}
    if tflite:
        size = int(tflite_size or cfg.model.input_size)
        s = cfg.eval_output_stride
        if size <= s or (size - 1) % s:
            raise ValueError(f"--tflite-size {size} is not s*n + 1 for output stride {s}")
        done["tflite"] = export_tflite(model, Path(out_dir) / TFLITE_FILE, size)
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = cli.ArgumentParser(prog="python -m strongpose.export", description=__doc__.split("\n")[0])
    ap.add_argument("weights", metavar="WEIGHTS", help="training folder or .weights.h5 file")
    ap.add_argument("output_dir", metavar="OUTPUT_DIR", help="SavedModel folder to write")
    ap.add_argument("--config", default=None, help="preset or YAML (default: config.yaml beside WEIGHTS)")
    ap.add_argument("--tflite", action="store_true", help="also write OUTPUT_DIR/model.tflite")
    ap.add_argument("--tflite-size", type=int, default=None, help="TFLite input side (default model.input_size)")
    ap.add_argument("--checkpoint", choices=("final", "best"), default="final")
    ap.add_argument("overrides", nargs="*", help="config overrides")
    args = ap.parse_args(argv)
    if not Path(args.weights).exists():
        raise FileNotFoundError(f"{args.weights}: no such weights file or folder")
    cli.import_tensorflow()
    from strongpose.predictor import resolve_config
    cfg = resolve_config(args.weights, args.config, args.overrides)
    done = export(args.weights, args.output_dir, cfg, tflite=args.tflite,
                  tflite_size=args.tflite_size, checkpoint=args.checkpoint)
    for kind, path in done.items():
        print(f"{kind}: {path}")
    return 0


def run() -> int:
    """The installed ``strongpose-export`` command."""
    return cli.run(main, prog="strongpose-export")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m strongpose.export"))
