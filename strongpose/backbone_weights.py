"""Load pretrained weights into the ResNet v2 backbone, by layer name, all or nothing.

Sources (``load_backbone_weights(backbone, source, depth)``):

- ``"imagenet"``: Keras' ``ResNet{50,101,152}V2(include_top=False, weights="imagenet")``
  (Keras downloads it; needs internet or Keras' cache), copied layer by layer.
- a Keras 3 ``.weights.h5`` file saved from a Keras ResNetV2 or from our backbone. Keras 3
  addresses layers in such a file by class and position (``layers/conv2d_7/vars/0``), not by
  name; the backbone creates its Conv2D and BatchNormalization layers in Keras' order, so
  those addresses resolve to our layer names (checked by the tests against Keras itself).
- a legacy Keras ``.h5`` weights file (Keras 2 layout, e.g. Keras' own downloaded
  ``resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5``), read by layer name.
- a TF-slim checkpoint (``resnet_v2_101.ckpt``), read with ``tf.train.load_checkpoint``; names
  map to ours with :func:`keras_to_slim_name`.

The classifier (Keras ``predictions``, slim ``logits``) and slim's ``global_step`` are known
extras and skipped. Anything else that does not match (a missing or unexpected variable, a
wrong shape) raises :class:`WeightsMismatchError` before anything is assigned: a backbone
is never half loaded. When the source is for another backbone (its widths and units per
stack, read off its 3x3 kernels by :func:`detect_depth`, are another's) the error says so first:
"weights from X are for resnet50, the backbone is resnet101"; then a few of the offenders.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from typing import Iterable, Mapping, Optional

import h5py
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from strongpose.backbones import SPECS
from strongpose.resnet_v2 import backbone_spec, unit_schedule

log = logging.getLogger(__name__)

KERAS_APPS = {"resnet50": "ResNet50V2", "resnet101": "ResNet101V2", "resnet152": "ResNet152V2"}
KERAS_HEAD_LAYERS = ("predictions",)          # classifier of a Keras ResNetV2 with include_top
KERAS3_HEAD_GROUPS = ("dense",)               # the same layer inside a Keras 3 .weights.h5
SLIM_IGNORED = re.compile(r"^(global_step|.*/logits/(weights|biases))$")
SLIM_VAR = {"kernel": "weights", "bias": "biases", "gamma": "gamma", "beta": "beta",
            "moving_mean": "moving_mean", "moving_variance": "moving_variance"}
SLIM_UNIT_PART = {"preact_bn": "preact", "0_conv": "shortcut", "1_conv": "conv1",
                  "1_bn": "conv1/BatchNorm", "2_conv": "conv2", "2_bn": "conv2/BatchNorm",
                  "3_conv": "conv3"}
_UNIT_LAYER = re.compile(r"^conv(\d+)_block(\d+)_(" + "|".join(SLIM_UNIT_PART) + r")$")
_LISTED = 5                                   # at most this many offenders listed per kind ...
_LINE_CHARS = 300                             # ... and no more than about this many characters


class WeightsMismatchError(ValueError):
    """A weights source that does not fit the backbone.

    ``missing``, ``unexpected`` and ``wrong_shape`` hold every offender; the message lists a
    few of each (``... and N more``). When the source is recognisably for another depth
    (``source_depth``, from its units per stack) the message leads with that.
    """

    def __init__(self, source: str, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                 wrong_shape: Iterable[str] = (), *, source_depth: Optional[str] = None,
                 depth: Optional[str] = None):
        self.source, self.source_depth, self.depth = source, source_depth, depth
        self.missing, self.unexpected, self.wrong_shape = list(missing), list(unexpected), list(wrong_shape)
        kinds = [(label, items) for label, items in (("missing from the source", self.missing),
                                                     ("in the source but not in the backbone", self.unexpected),
                                                     ("wrong shape", self.wrong_shape)) if items]
        counts = ", ".join(f"{len(items)} {label}" for label, items in kinds)
        if source_depth and depth and source_depth != depth:
            head = (f"weights from {source} are for {source_depth}, the backbone is {depth}: "
                    f"build the backbone as {source_depth} or use {depth} weights ({counts})")
        else:
            head = f"weights from {source} do not match the backbone ({counts})"
        lines = [head] + [f"  {label}: {_shortlist(items)}" for label, items in kinds]
        super().__init__("\n".join(lines))

    def with_depths(self, source_depth: str, depth: str) -> "WeightsMismatchError":
        """The same mismatch, its message led by "weights ... are for X, the backbone is Y"."""
        return WeightsMismatchError(self.source, self.missing, self.unexpected, self.wrong_shape,
                                    source_depth=source_depth, depth=depth)


def _shortlist(items: list[str]) -> str:
    """The first few ``items`` joined by commas, then ``... and N more``."""
    shown: list[str] = []
    for item in items[:_LISTED]:
        if shown and sum(len(x) + 2 for x in shown) + len(item) > _LINE_CHARS:
            break
        shown.append(item)
    more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return ", ".join(shown) + more


# ---------------------------------------------------------------- names
def backbone_variables(backbone: keras.Model) -> dict[str, keras.Variable]:
    """Every variable of the backbone keyed ``"<layer name>/<variable name>"``."""
    out = {}
    for layer in backbone.layers:
        for w in layer.weights:
            out[f"{layer.name}/{w.name}"] = w
    return out


def keras_to_slim_name(key: str, scope: str) -> str:
    """Our ``"<layer>/<variable>"`` -> the TF-slim ResNet v2 variable name under ``scope``.

    ``conv3_block2_1_bn/gamma`` -> ``<scope>/block2/unit_2/bottleneck_v2/conv1/BatchNorm/gamma``;
    ``conv1_conv/bias`` -> ``<scope>/conv1/biases``; ``post_bn/beta`` -> ``<scope>/postnorm/beta``.
    """
    layer, _, var = key.rpartition("/")
    if var not in SLIM_VAR or not layer:
        raise ValueError(f"{key!r}: not a '<layer>/<variable>' key of a ResNet v2 backbone")
    slim_var = SLIM_VAR[var]
    if layer == "conv1_conv" and var in ("kernel", "bias"):
        return f"{scope}/conv1/{slim_var}"
    if layer == "post_bn" and var not in ("kernel", "bias"):
        return f"{scope}/postnorm/{slim_var}"
    m = _UNIT_LAYER.match(layer)
    if m is None or (m.group(3).endswith("bn")) != (var not in ("kernel", "bias")):
        raise ValueError(f"{key!r}: no TF-slim ResNet v2 counterpart")
    stack, unit, part = int(m.group(1)), int(m.group(2)), SLIM_UNIT_PART[m.group(3)]
    return f"{scope}/block{stack - 1}/unit_{unit}/bottleneck_v2/{part}/{slim_var}"


def slim_scope(depth: str) -> str:
    """TF-slim's variable scope for ``depth``: ``resnet_v2_101``, ..., ``resnet_v2_tiny``."""
    backbone_spec(depth)
    return "resnet_v2_" + depth.removeprefix("resnet")


def _snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case`` (how Keras 3 names a layer in a .weights.h5 file)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras3_h5_names(model: keras.Model) -> dict[str, str]:
    """Group name each layer of ``model`` gets in a Keras 3 ``.weights.h5`` -> layer name.

    Keras 3 names the entries of ``model.layers`` by snake-cased class name, numbered in
    order per class (``conv2d``, ``conv2d_1``, ...).
    """
    used: dict[str, int] = {}
    out = {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        used[base] = used.get(base, -1) + 1
        out[base if used[base] == 0 else f"{base}_{used[base]}"] = layer.name
    return out


def _save_order(layer: keras.layers.Layer) -> list[str]:
    """Variable names of ``layer`` in the order Keras writes them (``vars/0``, ``vars/1``, ...)."""
    store: dict = {}
    layer.save_own_variables(store)
    return [store[str(i)].name for i in range(len(store))]


# -------------------------------------------------------------- readers
def read_keras3_weights(path: str, backbone: keras.Model) -> tuple[dict[str, np.ndarray], list[str]]:
    """A Keras 3 ``.weights.h5`` -> (``{"<layer>/<var>": array}``, unexpected entries)."""
    names = keras3_h5_names(backbone)
    values, unexpected = {}, []
    with h5py.File(path, "r") as f:
        if "layers" not in f:
            raise WeightsMismatchError(path, unexpected=[f"no 'layers' group (top level: {sorted(f)})"])
        for group_name, group in f["layers"].items():
            arrays = {k: np.asarray(v) for k, v in group.get("vars", {}).items()}
            if not arrays:
                continue
            if group_name in KERAS3_HEAD_GROUPS:
                log.info("skipping classifier %s in %s", group_name, path)
                continue
            if group_name not in names:
                unexpected.extend(f"layers/{group_name}/vars/{k}" for k in sorted(arrays))
                continue
            layer_name = names[group_name]
            order = _save_order(backbone.get_layer(layer_name))
            for k in sorted(arrays, key=int):
                if int(k) < len(order):
                    values[f"{layer_name}/{order[int(k)]}"] = arrays[k]
                else:
                    unexpected.append(f"layers/{group_name}/vars/{k} ({layer_name})")
    return values, unexpected


def read_legacy_h5(path: str) -> dict[str, np.ndarray]:
    """A Keras 2 style ``.h5`` weights file -> ``{"<layer>/<var>": array}`` (classifier skipped)."""
    values = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: not a Keras weights file (no 'layer_names'; a Keras 3 file "
                             "must be named *.weights.h5)")
        for layer_name in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
            if layer_name in KERAS_HEAD_LAYERS:
                continue
            group = root[layer_name]
            for wname in group.attrs.get("weight_names", []):
                wname = wname.decode() if isinstance(wname, bytes) else wname
                var = wname.split("/")[-1].split(":")[0]
                values[f"{layer_name}/{var}"] = np.asarray(group[wname])
    return values


def _keras_app_weights(depth: str) -> dict[str, np.ndarray]:
    """Keras' ImageNet ResNetV2 of ``depth`` -> ``{"<layer>/<var>": array}``."""
    if depth not in KERAS_APPS:
        raise ValueError(f"no ImageNet weights for backbone {depth!r} (Keras has {sorted(KERAS_APPS)})")
    app = getattr(keras.applications, KERAS_APPS[depth])(
        include_top=False, weights="imagenet", input_shape=(None, None, 3))
    return {k: np.asarray(v) for k, v in backbone_variables(app).items()}


def is_checkpoint(source: str) -> bool:
    """Whether ``source`` names a TensorFlow checkpoint (V2 prefix with ``.index``, or V1 file)."""
    return os.path.isfile(source + ".index") or (
        os.path.isfile(source) and not source.endswith((".h5", ".hdf5", ".keras")))


def find_slim_scope(names: Iterable[str]) -> Optional[str]:
    """The scope ``S`` of the unique ``S/conv1/weights`` outside any block, or None."""
    scopes = {n[: -len("/conv1/weights")] for n in names
              if n.endswith("/conv1/weights") and "/block" not in n}
    return scopes.pop() if len(scopes) == 1 else None


def read_slim_checkpoint(prefix: str, backbone: keras.Model, scope: Optional[str] = None,
                         progress: bool = False) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
    """A TF-slim ResNet v2 checkpoint -> (``{"<layer>/<var>": array}``, unexpected names, key->slim name).

    ``scope`` defaults to the one found in the checkpoint (e.g. ``resnet_v2_101``).
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise ValueError(f"cannot read checkpoint {prefix!r}: {str(exc).splitlines()[0]}") from exc
    shapes = reader.get_variable_to_shape_map()
    scope = scope or find_slim_scope(shapes)
    if scope is None:
        raise WeightsMismatchError(prefix, unexpected=sorted(shapes),
                                   missing=["<scope>/conv1/weights (no single ResNet v2 scope found)"])
    to_slim = {key: keras_to_slim_name(key, scope) for key in backbone_variables(backbone)}
    from_slim = {s: k for k, s in to_slim.items()}
    values, unexpected = {}, []
    for name in tqdm(sorted(shapes), desc="reading checkpoint", unit="var", disable=not progress):
        if name in from_slim:
            values[from_slim[name]] = reader.get_tensor(name)
        elif SLIM_IGNORED.match(name):
            log.debug("skipping %s", name)
        else:
            unexpected.append(name)
    return values, unexpected, to_slim


# ------------------------------------------------------------- depth
def stacks_of(kernel_shapes: Iterable[Iterable[int]]) -> tuple[tuple[int, int], ...]:
    """``(bottleneck width, units)`` per stack of a ResNet v2, read off its kernel shapes.

    Every bottleneck unit has exactly one 3x3 convolution, whose output width is the
    bottleneck width of its stack (one width per stack, growing stack by stack); so the
    3x3 kernels counted by output width, narrowest first, are the stacks:
    ``((64, 3), (128, 4), (256, 23), (512, 3))`` for ResNet-101 (the form of
    ``BackboneSpec.stacks``). Shapes are ``(h, w, in, out)`` (Keras and TF-slim).
    """
    widths = Counter(int(shape[3]) for shape in map(tuple, kernel_shapes)
                     if len(shape) == 4 and shape[0] == 3 and shape[1] == 3)
    return tuple((w, widths[w]) for w in sorted(widths))


def units_per_stack(kernel_shapes: Iterable[Iterable[int]]) -> tuple[int, ...]:
    """Bottleneck units per stack (:func:`stacks_of` without the widths): ``(3, 4, 23, 3)``
    for ResNet-101."""
    return tuple(units for _, units in stacks_of(kernel_shapes))


def depth_for_units(units: Iterable[int], widths: Optional[Iterable[int]] = None) -> Optional[str]:
    """The backbone (``backbones.SPECS``) with these units per stack and, when given, these
    bottleneck widths; None when there is none, or when (without widths) several backbones
    have these units ("tiny" and "small" both have ``(2, 2, 2, 2)``)."""
    units = tuple(int(u) for u in units)
    found = [name for name, spec in SPECS.items() if spec.units == units]
    if widths is not None:
        stacks = tuple(zip((int(w) for w in widths), units))
        found = [name for name in found if tuple(SPECS[name].stacks) == stacks]
    return found[0] if len(found) == 1 else None


def _source_kernel_shapes(source: str) -> list[tuple[int, ...]]:
    """Shapes of the 4-D weights in an .h5 file or of the ``.../weights`` of a checkpoint."""
    shapes: list[tuple[int, ...]] = []
    if source.endswith((".h5", ".hdf5")) and os.path.isfile(source):
        def visit(_name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset) and obj.ndim == 4:
                shapes.append(tuple(obj.shape))

        with h5py.File(source, "r") as f:
            root = f["layers"] if "layers" in f else f["model_weights"] if "model_weights" in f else f
            root.visititems(visit)
    elif is_checkpoint(source):
        reader = tf.train.load_checkpoint(source)
        shapes = [tuple(s) for n, s in reader.get_variable_to_shape_map().items() if n.endswith("/weights")]
    return shapes


def detect_depth(source: str) -> Optional[str]:
    """Which backbone (``"resnet50"``, ...) a weights file or TF-slim checkpoint is for.

    Read off the widths and units per stack of its 3x3 kernels (:func:`stacks_of`); None
    when ``source`` cannot be read or its stacks are no known backbone's.
    """
    try:
        stacks = stacks_of(_source_kernel_shapes(source))
        return depth_for_units([u for _, u in stacks], widths=[w for w, _ in stacks])
    except (OSError, ValueError, tf.errors.OpError):
        return None


# ------------------------------------------------------------- assigning
def check_depth(backbone: keras.Model, depth: str) -> None:
    """Raise ValueError unless ``backbone`` has exactly the units of a ResNet v2 ``depth``."""
    expected = {f"{p.name}_out" for p in unit_schedule(depth, 32)}
    found = {l.name for l in backbone.layers if re.fullmatch(r"conv\d+_block\d+_out", l.name)}
    if found != expected:
        raise ValueError(f"backbone {backbone.name!r} is not a {depth} ResNet v2: it has {len(found)} "
                         f"bottleneck units, {depth} has {len(expected)}")


def assign_weights(backbone: keras.Model, values: Mapping[str, np.ndarray], source: str,
                   unexpected: Iterable[str] = (), aliases: Optional[Mapping[str, str]] = None) -> int:
    """Check ``values`` (``"<layer>/<var>"`` -> array) against every backbone variable, then assign.

    Raises :class:`WeightsMismatchError` (nothing assigned) unless every variable has a value
    of its shape and nothing is left over. ``aliases`` adds the source's own name of a key to
    messages. Returns the number of variables assigned.
    """
    variables = backbone_variables(backbone)
    label = lambda k: f"{k} ({aliases[k]})" if aliases and k in aliases else k
    missing = [label(k) for k in variables if k not in values]
    unexpected = list(unexpected) + [label(k) for k in values if k not in variables]
    wrong = [f"{label(k)}: {tuple(np.shape(v))} != {tuple(variables[k].shape)}"
             for k, v in values.items() if k in variables and tuple(np.shape(v)) != tuple(variables[k].shape)]
    if missing or unexpected or wrong:
        raise WeightsMismatchError(source, missing, unexpected, wrong)
    for key, var in variables.items():
        var.assign(np.asarray(values[key], dtype=var.dtype))
    return len(variables)


def load_backbone_weights(backbone: keras.Model, source: str, depth: str,
                          scope: Optional[str] = None, progress: bool = False) -> int:
    """Load ``source`` into ``backbone`` (built by ``build_backbone(depth, ...)``), by layer name.

    Args:
        backbone: the model from :func:`strongpose.resnet_v2.build_backbone`.
        source: ``"imagenet"``, a ``.weights.h5`` / legacy ``.h5`` Keras weights file, or a
            TF-slim checkpoint prefix (``.../resnet_v2_101.ckpt``).
        depth: the backbone's depth (``backbones.BACKBONES``); picks Keras' ImageNet model.
        scope: TF-slim variable scope; default: found in the checkpoint.
        progress: show a progress bar while reading a checkpoint.

    Returns:
        The number of variables loaded (all of the backbone's).

    Raises:
        WeightsMismatchError: the source does not fit (led by "... are for resnet50, the
            backbone is resnet101" when it is for another depth); nothing loaded.
        FileNotFoundError: ``source`` is not "imagenet" and no such file or checkpoint exists.
    """
    check_depth(backbone, depth)
    try:
        if source == "imagenet":
            n = assign_weights(backbone, _keras_app_weights(depth), f"Keras ImageNet {KERAS_APPS[depth]}")
        elif source.endswith(".weights.h5") and os.path.isfile(source):
            values, unexpected = read_keras3_weights(source, backbone)
            n = assign_weights(backbone, values, source, unexpected)
        elif source.endswith((".h5", ".hdf5")) and os.path.isfile(source):
            n = assign_weights(backbone, read_legacy_h5(source), source)
        elif is_checkpoint(source):
            values, unexpected, to_slim = read_slim_checkpoint(source, backbone, scope, progress)
            n = assign_weights(backbone, values, source, unexpected, aliases=to_slim)
        else:
            raise FileNotFoundError(f"weights source {source!r}: not 'imagenet', an existing .weights.h5 "
                                    "/ .h5 file, or a TF checkpoint prefix (no such file or .index)")
    except WeightsMismatchError as exc:
        found = detect_depth(source) if source != "imagenet" else None
        if found is not None and found != depth:
            raise exc.with_depths(found, depth) from None
        raise
    log.info("loaded %d backbone variables from %s", n, source)
    return n
