"""Convert a TF-slim ResNet v2 checkpoint to a ``.weights.h5`` file of our backbone.

    python -m strongpose.convert_checkpoint model/101/resnet_v2_101.ckpt \\
        resnet101_slim.weights.h5 --depth 101

The result loads with ``load_backbone_weights(backbone, "resnet101_slim.weights.h5",
"resnet101")`` (or ``model.weights=...`` in the config) into a backbone of any output stride.
Bad input (a missing checkpoint, one for another depth, a bad output name) prints one line
``...: error: ...`` and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from strongpose import cli
from strongpose.backbones import BACKBONES

PROG = "python -m strongpose.convert_checkpoint"
log = logging.getLogger("strongpose.convert_checkpoint")


def parse_depth(text: str) -> str:
    """``"101"`` or ``"resnet101"`` -> ``"resnet101"``; ``"tiny"`` stays."""
    depth = text if text in BACKBONES else f"resnet{text}"
    if depth not in BACKBONES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of 50, 101, 152, tiny (or {BACKBONES})")
    return depth


def _check_output(output: str) -> None:
    if not output.endswith(".weights.h5"):
        raise ValueError(f"output {output!r} must end in .weights.h5")


def convert(checkpoint: str, output: str, depth: str, scope: Optional[str] = None,
            progress: bool = True) -> int:
    """Read the slim checkpoint into a fresh backbone of ``depth`` and save its weights to ``output``.

    Returns the number of variables written. Raises ValueError for an output name Keras will
    not write, and whatever :func:`load_backbone_weights` raises for a bad checkpoint.
    """
    _check_output(output)
    from strongpose.backbone_weights import load_backbone_weights  # Keras and TensorFlow
    from strongpose.resnet_v2 import build_backbone

    backbone = build_backbone(depth, output_stride=32)
    n = load_backbone_weights(backbone, checkpoint, depth, scope=scope, progress=progress)
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    backbone.save_weights(output)
    return n


def _main(argv: Sequence[str]) -> int:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="TF-slim checkpoint prefix, e.g. model/101/resnet_v2_101.ckpt")
    parser.add_argument("output", help="output Keras weights file, *.weights.h5")
    parser.add_argument("--depth", type=parse_depth, default="resnet101", help="50, 101, 152 or tiny")
    parser.add_argument("--scope", default=None, help="slim variable scope (default: found in the checkpoint)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _check_output(args.output)                      # cheap checks before TensorFlow loads
    if not (os.path.isfile(args.checkpoint + ".index") or os.path.isfile(args.checkpoint)):
        raise FileNotFoundError(f"checkpoint {args.checkpoint!r}: no such file, nor {args.checkpoint}.index")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cli.import_tensorflow()
    n = convert(args.checkpoint, args.output, args.depth, args.scope, progress=not args.quiet)
    log.info("wrote %d variables of %s to %s", n, args.depth, args.output)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status: 0 converted, 2 bad input.

    Bad input (a missing or mismatched checkpoint, a bad output name) prints one line
    ``python -m strongpose.convert_checkpoint: error: ...`` on stderr; ``--debug`` raises
    instead, with the traceback.
    """
    return cli.run(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
