"""The StrongPose network: ResNet v2 backbone, 1x1 heads and in-network offset refinement.

Input: RGB images, float 0..255, any size ``s*n + 1`` (``s`` = output stride); the
backbone's preprocessing runs inside the model. Outputs (docs/MAPS.md "Network output";
keys and channels from the table in ``strongpose.maps``), all float32 at map size
``n + 1``, channels last:

=========================  ======  =========================================================
key                        C       meaning
=========================  ======  =========================================================
``heatmap_logits``         K       keypoint heat-map logits
``short``                  2K      short-range offsets (input pixels)
``mid``                    4E      mid-range displacements, refined with short offsets
``long``                   2K      long-range offsets, refined by themselves then by short
``body_logits``            1       body heat-map logit
``inter_heatmap_logits``   K       (training only) heat-map logits on ``mid_features``
``inter_short``            2K      (training only) short-range offsets on ``mid_features``
=========================  ======  =========================================================

Offset heads predict O(1) numbers: their raw outputs are multiplied by
``codec.disk_radius`` to give input-image pixels.

Refinement (bilinear sampling, :func:`bilinear_sample`), with ``p`` a cell's point:

- mid-range, directed edge ``(a, b)``: ``M(p) <- M(p) + S_b(p + M(p))``, repeated
  ``model.mid_refine_steps`` times;
- long-range, keypoint ``k``: ``L(p) <- L(p) + L(p + L(p))`` then
  ``L(p) <- L(p) + S_k(p + L(p))``, the pair repeated ``model.long_refine_steps`` times.

A sampled point off the map is clamped to the map's border (the nearest border cell's
value, interpolated along the border), so refinement never reads outside the map or
produces NaNs. Gradients flow through the sampled values and the sample positions.

Everything here is written with ``keras.ops`` and Keras layers, so the network builds and
runs on any Keras 3 backend (TensorFlow, JAX); only the TensorFlow backend adds a
run-time size check for inputs traced with unknown height or width.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

from strongpose import geometry, maps, resnet_v2
from strongpose.batch_norm import PACKAGE  # the one registration package name
from strongpose.config import Config
# Output keys and head channels come from the map table (strongpose/maps.py).
OUTPUT_KEYS: tuple[str, ...] = maps.OUTPUT_KEYS
INTERMEDIATE_KEYS: tuple[str, ...] = tuple(
    maps.intermediate_output_key(key) for key in maps.INTERMEDIATE)
# The offset maps OffsetRefinement scales and refines, in its input/output order.
_REFINED: tuple[str, ...] = ("short", "mid", "long")

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array, ...) or array-like


# ----------------------------------------------------------------------- sampling
def cell_points(height: int | Tensor, width: int | Tensor, stride: float) -> Tensor:
    """Input-image points ``(x, y) = (s*j, s*i)`` of an ``(h, w)`` map: shape (h, w, 2), float32."""
    xs = ops.cast(ops.arange(width), "float32") * stride
    ys = ops.cast(ops.arange(height), "float32") * stride
    gx, gy = ops.meshgrid(xs, ys)
    return ops.stack([gx, gy], axis=-1)


def bilinear_sample(field: Tensor, points: Tensor, stride: float) -> Tensor:
    """Sample item ``n`` of a field at point ``n`` of every cell, bilinearly.

    Args:
        field: ``(B, h, w, N, C)`` values of N items on the map.
        points: ``(B, h, w, N, 2)`` points ``(x, y)`` in input-image pixels; cell
            ``(i, j)`` of the map lies at ``(s*j, s*i)``. Points off the map are clamped
            to its border.
        stride: the output stride ``s``.

    Returns:
        ``(B, h, w, N, C)``: ``out[b, i, j, n] = field[b, :, :, n]`` interpolated at
        ``points[b, i, j, n]``.
    """
    field = ops.convert_to_tensor(field)
    dtype = field.dtype
    points = ops.cast(points, dtype)
    b, h, w, n, c = ops.shape(field)
    x = ops.clip(points[..., 0] / stride, 0.0, ops.cast(w - 1, dtype))
    y = ops.clip(points[..., 1] / stride, 0.0, ops.cast(h - 1, dtype))
    x0f, y0f = ops.floor(x), ops.floor(y)
    fx, fy = ops.expand_dims(x - x0f, -1), ops.expand_dims(y - y0f, -1)
    x0, y0 = ops.cast(x0f, "int32"), ops.cast(y0f, "int32")
    x1, y1 = ops.minimum(x0 + 1, w - 1), ops.minimum(y0 + 1, h - 1)
    # One flat row per (image, cell, item): row = ((b*h + y)*w + x)*n + item.
    flat = ops.reshape(field, (-1, c))
    base = ops.reshape(ops.arange(b, dtype="int32") * (h * w * n), (-1, 1, 1, 1))
    item = ops.arange(n, dtype="int32")

    def gather(yy: Tensor, xx: Tensor) -> Tensor:
        return ops.take(flat, base + (yy * w + xx) * n + item, axis=0)

    top = gather(y0, x0) * (1 - fx) + gather(y0, x1) * fx
    bottom = gather(y1, x0) * (1 - fx) + gather(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def _pairs(t: Tensor) -> Tensor:
    """(B, h, w, 2N) -> (B, h, w, N, 2)."""
    b, h, w, c = ops.shape(t)
    return ops.reshape(t, (b, h, w, c // 2, 2))


def _flat(t: Tensor) -> Tensor:
    """(B, h, w, N, 2) -> (B, h, w, 2N)."""
    b, h, w, n, _ = ops.shape(t)
    return ops.reshape(t, (b, h, w, n * 2))


def refine_mid(mid: Tensor, short: Tensor, directed_edges: Sequence[tuple[int, int]],
               stride: float, steps: int) -> Tensor:
    """``M_e(p) <- M_e(p) + S_b(p + M_e(p))`` for each directed edge ``e = (a, b)``, ``steps`` times.

    ``mid`` is ``(B, h, w, 4E)`` and ``short`` ``(B, h, w, 2K)``, both in input pixels.
    """
    if steps <= 0:
        return mid
    m, s = _pairs(ops.convert_to_tensor(mid)), _pairs(ops.convert_to_tensor(short))
    targets = ops.convert_to_tensor([b for _, b in directed_edges], "int32")
    s_b = ops.take(s, targets, axis=3)
    _, h, w, _, _ = ops.shape(m)
    grid = ops.expand_dims(cell_points(h, w, stride), 2)
    for _ in range(steps):
        m = m + bilinear_sample(s_b, grid + m, stride)
    return _flat(m)


def refine_long(long: Tensor, short: Tensor, stride: float, steps: int) -> Tensor:
    """``L <- L + L(p + L)`` then ``L <- L + S(p + L)`` per keypoint, ``steps`` times.

    ``long`` and ``short`` are ``(B, h, w, 2K)`` in input pixels.
    """
    if steps <= 0:
        return long
    l, s = _pairs(ops.convert_to_tensor(long)), _pairs(ops.convert_to_tensor(short))
    _, h, w, _, _ = ops.shape(l)
    grid = ops.expand_dims(cell_points(h, w, stride), 2)
    for _ in range(steps):
        l = l + bilinear_sample(l, grid + l, stride)
        l = l + bilinear_sample(s, grid + l, stride)
    return _flat(l)


# ------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package=PACKAGE)
class OffsetRefinement(keras.layers.Layer):
    """Scales raw offset heads to input pixels and refines mid- and long-range offsets.

    Inputs ``[short_raw (2K), mid_raw (4E), long_raw (2K)]``; outputs
    ``[short, mid, long]`` in input-image pixels, float32 whatever the policy.
    """

    def __init__(self, directed_edges: Sequence[Sequence[int]], output_stride: int,
                 offset_scale: float, mid_refine_steps: int = 2, long_refine_steps: int = 1,
                 **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.directed_edges = tuple((int(a), int(b)) for a, b in directed_edges)
        self.output_stride = int(output_stride)
        self.offset_scale = float(offset_scale)
        self.mid_refine_steps = int(mid_refine_steps)
        self.long_refine_steps = int(long_refine_steps)

    def call(self, inputs):
        short, mid, long = (ops.cast(t, "float32") * self.offset_scale for t in inputs)
        mid = refine_mid(mid, short, self.directed_edges, self.output_stride, self.mid_refine_steps)
        long = refine_long(long, short, self.output_stride, self.long_refine_steps)
        return [short, mid, long]

    def compute_output_shape(self, input_shapes):
        return [tuple(s) for s in input_shapes]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(directed_edges=[list(e) for e in self.directed_edges],
                      output_stride=self.output_stride, offset_scale=self.offset_scale,
                      mid_refine_steps=self.mid_refine_steps,
                      long_refine_steps=self.long_refine_steps)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaleToFloat32(keras.layers.Layer):
    """``float32(x) * scale``: logits and offsets leave the network in float32."""

    def __init__(self, scale: float = 1.0, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        x = ops.cast(x, "float32")
        return x * self.scale if self.scale != 1.0 else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(scale=self.scale)
        return config


def _nearest_sizes(size: int, s: int) -> str:
    """The valid sizes ``s*n + 1`` (n >= 1) next to an invalid ``size``, as words."""
    above = geometry.padded_size(max(int(size), 1), s)
    below = s * ((int(size) - 1) // s) + 1
    return f"nearest: {below} or {above}" if s < below < size else f"nearest: {above}"


def _assert_size_at_run_time(images: Tensor, s: int) -> Tensor:
    """TensorFlow only: ``images`` once its dynamic height and width are checked to be ``s*n + 1``."""
    import tensorflow as tf  # only reached on the TensorFlow backend

    hw = tf.shape(images)[1:3]
    check = tf.debugging.assert_equal(
        (hw - 1) % s, tf.zeros_like(hw),
        message=f"input height and width must be s*n + 1 for output stride {s}")
    with tf.control_dependencies([check]):
        return tf.identity(images)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Preprocess(keras.layers.Layer):
    """Checks the input size is ``s*n + 1`` and applies :func:`strongpose.resnet_v2.preprocess`.

    Runs in float32 (0..255 inputs); the next layer casts to the policy's compute dtype.
    A size that is not ``s*n + 1`` raises (ValueError for static shapes, as always on
    JAX and PyTorch; on TensorFlow an InvalidArgumentError at run time for a traced
    dynamic size).
    """

    def __init__(self, output_stride: int = 8, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.output_stride = int(output_stride)

    def call(self, images):
        s = self.output_stride
        for axis, size in ((1, images.shape[1]), (2, images.shape[2])):
            if size is not None and (size <= s or (size - 1) % s):
                raise ValueError(f"input {'height' if axis == 1 else 'width'} {size} is not "
                                 f"s*n + 1 for output stride {s} ({_nearest_sizes(size, s)})")
        images = ops.cast(images, "float32")
        if keras.backend.backend() == "tensorflow" and None in tuple(images.shape[1:3]):
            images = _assert_size_at_run_time(images, s)
        return resnet_v2.preprocess(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(output_stride=self.output_stride)
        return config


# -------------------------------------------------------------------------- model
def _heads(features, channels: dict[str, int], head_channels: int, prefix: str) -> dict:
    """1x1 conv heads (after one shared 3x3 conv + ReLU when ``head_channels > 0``)."""
    if head_channels > 0:
        features = keras.layers.Conv2D(head_channels, 3, padding="same", activation="relu",
                                       name=f"{prefix}head_conv")(features)
    return {key: keras.layers.Conv2D(c, 1, name=f"{prefix}{key}_head")(features)
            for key, c in channels.items()}


def _offset_scale(spec: maps.MapSpec, radius: float, done: Sequence[str]) -> float:
    """Factor on a raw head: offset heads predict O(1) numbers, ``radius`` * that is pixels
    (1.0 for maps that are not offsets, or whose scaling ``done`` names as done already)."""
    return radius if spec.kind.endswith("_offset") and spec.key not in done else 1.0


def freeze_batchnorm(model: keras.Model) -> int:
    """Put every BatchNormalization layer of ``model`` (nested too) in inference mode.

    Keras runs a BN layer with ``trainable = False`` on its moving statistics, even in
    training, and leaves its scale and offset unchanged. Returns how many were frozen.
    """
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
        elif isinstance(layer, keras.Model):
            count += freeze_batchnorm(layer)
    return count


def build_model(cfg: Config, output_stride: int | None = None,
                training_outputs: bool = True) -> keras.Model:
    """The StrongPose network of ``cfg`` (a Keras 3 functional model with dict outputs).

    Args:
        cfg: the configuration: backbone, heads, refinement steps, skeleton (K, E) and
            ``codec.disk_radius`` (offset head scale).
        output_stride: 8, 16 or 32; None: ``cfg.model.output_stride``. Weights do not
            depend on it, so a model trained at 16 loads into one built at 8.
        training_outputs: also output ``inter_heatmap_logits`` and ``inter_short``
            (when ``cfg.model.intermediate_supervision``).

    Returns:
        A model mapping ``image`` (B, s*n+1, s*m+1, 3) float RGB 0..255 to the dict of
        float32 maps listed in this module's docstring, each (B, n+1, m+1, C).
    """
    m = cfg.model
    stride = m.output_stride if output_stride is None else int(output_stride)
    if stride not in (8, 16, 32):
        raise ValueError(f"output_stride {stride} is not 8, 16 or 32")
    sk = cfg.skeleton
    radius = cfg.codec.disk_radius

    backbone = resnet_v2.build_backbone(m.backbone, output_stride=stride, name="resnet_v2")
    if m.weights:
        from strongpose.backbone_weights import load_backbone_weights
        load_backbone_weights(backbone, m.weights, m.backbone)
    if m.freeze_batchnorm:
        freeze_batchnorm(backbone)

    image = keras.Input(shape=(None, None, 3), name="image")
    feats = backbone(Preprocess(stride, name="preprocess")(image))
    # Heads named "<output key>_head" (e.g. heatmap_logits_head), in table order.
    raw = _heads(feats["features"], {spec.output_key: spec.channels(sk) for spec in maps.MAPS},
                 m.head_channels, "")
    refined = OffsetRefinement(
        sk.directed_edges, stride, radius, m.mid_refine_steps, m.long_refine_steps,
        name="offset_refinement")([raw[key] for key in _REFINED])
    raw.update(zip(_REFINED, refined))
    # Float32 outputs named by their keys; offsets not refined above are scaled to pixels.
    outputs = {spec.output_key: ScaleToFloat32(_offset_scale(spec, radius, _REFINED),
                                               name=spec.output_key)(raw[spec.output_key])
               for spec in maps.MAPS}
    if training_outputs and m.intermediate_supervision:
        specs = [maps.SPECS[key] for key in maps.INTERMEDIATE]
        inter = _heads(feats["mid_features"],
                       {spec.output_key: spec.channels(sk) for spec in specs},
                       m.head_channels, "inter_")
        for spec in specs:
            key = maps.intermediate_output_key(spec.key)
            outputs[key] = ScaleToFloat32(_offset_scale(spec, radius, ()), name=key)(
                inter[spec.output_key])
    return keras.Model(image, outputs, name="strongpose")
