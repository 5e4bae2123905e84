"""Pre-activation ResNet v2 backbone with atrous output stride 8, 16 or 32.

The network is Keras' ``ResNet50V2`` / ``ResNet101V2`` / ``ResNet152V2`` (bottleneck
units, stride on the *last* unit of each stack, a 1x1 max-pool shortcut on strided
units, pre-activation batch norm, ``post_bn``) with identical layer names, so Keras'
ImageNet weights load by name; ``"tiny"`` is the same design, narrow and 2 units per
stack, for tests and CPU runs.

The widths and depths (``SPECS``) live in :mod:`strongpose.backbones`, readable without
Keras; this module builds the networks from them.

Output stride: once the running stride reaches ``output_stride`` later strides become 1
and the dilation rate is multiplied instead (``stack_blocks_dense`` of TF-slim's
``resnet_utils``). Every convolution is padded symmetrically (explicit
``ZeroPadding2D`` + ``valid``), so an input of ``s*n + 1`` pixels gives exactly
``n + 1`` map cells and cell ``(i, j)`` sits on input pixel ``(s*j, s*i)``.
Because of that, the atrous network equals the strided one at the shared cells: the
output-stride-8 features sub-sampled ``[::4, ::4]`` are the output-stride-32 features.

    backbone = build_backbone("resnet101", output_stride=8)
    out = backbone(preprocess(images))   # {"features": ..., "mid_features": ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import keras
import numpy as np
from keras import layers, ops

from strongpose import batch_norm
from strongpose.backbones import BACKBONES, SPECS, BackboneSpec  # noqa: F401 - re-exported

OUTPUT_STRIDES = (8, 16, 32)
ROOT_STRIDE = 4                  # conv1 (stride 2) then pool1 (stride 2)
STACK_STRIDES = (2, 2, 2, 1)     # stride of the last unit of conv2, conv3, conv4, conv5
MID_STACK = 2                    # index of conv4 in the stacks: mid_features come from its middle unit
BN_EPSILON = 1.001e-5            # Keras' ResNetV2 value (TF-slim uses 1e-5)


@dataclass(frozen=True)
class UnitPlan:
    """One bottleneck unit as built: its Keras name prefix, stride and dilation rate."""

    name: str              # e.g. "conv4_block12"
    filters: int           # bottleneck width; the unit outputs 4 * filters
    stride: int            # stride of its 3x3 conv (1 or 2)
    rate: int              # dilation rate of its 3x3 conv
    conv_shortcut: bool    # 1x1 projection shortcut (first unit of a stack)


def backbone_spec(depth: str) -> BackboneSpec:
    """The spec of ``depth`` (one of ``backbones.BACKBONES``)."""
    if depth not in SPECS:
        raise ValueError(f"unknown backbone depth {depth!r}; expected one of {BACKBONES}")
    return SPECS[depth]


def unit_schedule(depth: str, output_stride: int) -> list[UnitPlan]:
    """Strides and dilation rates of every unit for ``output_stride`` (slim semantics).

    A unit met once the running stride equals ``output_stride`` keeps stride 1 and the
    current rate; its nominal stride then multiplies the rate of the units after it.
    """
    spec = backbone_spec(depth)
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride {output_stride!r} is not one of {OUTPUT_STRIDES}")
    current, rate = ROOT_STRIDE, 1
    plans = []
    for s, (filters, units) in enumerate(spec.stacks):
        for u in range(1, units + 1):
            stride = STACK_STRIDES[s] if u == units else 1
            name = f"conv{s + 2}_block{u}"
            if current == output_stride:
                plans.append(UnitPlan(name, filters, 1, rate, u == 1))
                rate *= stride
            else:
                plans.append(UnitPlan(name, filters, stride, 1, u == 1))
                current *= stride
    return plans


def mid_unit_name(depth: str) -> str:
    """Name prefix of the middle unit of stack conv4, e.g. ``"conv4_block12"`` for resnet101."""
    units = backbone_spec(depth).stacks[MID_STACK][1]
    return f"conv{MID_STACK + 2}_block{(units + 1) // 2}"


def mid_layer_name(depth: str) -> str:
    """The layer whose output is ``mid_features`` (before any sub-sampling): ``<mid unit>_out``."""
    return f"{mid_unit_name(depth)}_out"


def _bn(name: str) -> batch_norm.BatchNormalization:
    """A batch-norm layer (fused training kernel on TensorFlow; Keras' variables and names)."""
    return batch_norm.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name=name)


def _unit(x: keras.KerasTensor, plan: UnitPlan) -> keras.KerasTensor:
    """Pre-activation bottleneck unit; layer names and creation order as in Keras."""
    n = plan.name
    preact = _bn(f"{n}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{n}_preact_relu")(preact)
    if plan.conv_shortcut:
        shortcut = layers.Conv2D(4 * plan.filters, 1, strides=plan.stride, name=f"{n}_0_conv")(preact)
    elif plan.stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=plan.stride, name=f"{n}_0_pool")(x)
    else:
        shortcut = x
    y = layers.Conv2D(plan.filters, 1, use_bias=False, name=f"{n}_1_conv")(preact)
    y = _bn(f"{n}_1_bn")(y)
    y = layers.Activation("relu", name=f"{n}_1_relu")(y)
    # Symmetric padding (slim's conv2d_same): 3x3 taps at -rate, 0, +rate around each cell.
    y = layers.ZeroPadding2D(padding=plan.rate, name=f"{n}_2_pad")(y)
    y = layers.Conv2D(plan.filters, 3, strides=plan.stride, dilation_rate=plan.rate,
                      use_bias=False, name=f"{n}_2_conv")(y)
    y = _bn(f"{n}_2_bn")(y)
    y = layers.Activation("relu", name=f"{n}_2_relu")(y)
    y = layers.Conv2D(4 * plan.filters, 1, name=f"{n}_3_conv")(y)
    return layers.Add(name=f"{n}_out")([shortcut, y])


def _check_input_shape(input_shape: Sequence[Optional[int]], output_stride: int) -> None:
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {tuple(input_shape)}")
    for size in input_shape[:2]:
        if size is not None and (size <= output_stride or (size - 1) % output_stride):
            raise ValueError(f"input size {size} is not s*n + 1 for output stride {output_stride} "
                             f"(e.g. {output_stride * 8 + 1})")


def build_backbone(depth: str, output_stride: int = 8,
                   input_shape: Sequence[Optional[int]] = (None, None, 3),
                   name: str = "resnet_v2") -> keras.Model:
    """ResNet v2 ``depth`` at ``output_stride``: preprocessed image -> feature maps.

    Args:
        depth: one of ``backbones.BACKBONES`` ("resnet50", "resnet101", "resnet152", "tiny").
        output_stride: 8, 16 or 32.
        input_shape: ``(H, W, 3)``; known sizes must be ``output_stride*n + 1``.
        name: the Keras model's name.

    Returns:
        A functional model mapping a float image (see :func:`preprocess`) to
        ``{"features": post_bn + relu output, "mid_features": output of the middle unit of
        conv4}``, both at exactly ``output_stride`` (input ``s*n + 1`` -> ``n + 1`` cells).
    """
    plans = unit_schedule(depth, output_stride)
    _check_input_shape(input_shape, output_stride)
    spec = backbone_spec(depth)
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.ZeroPadding2D(padding=3, name="conv1_pad")(image)
    x = layers.Conv2D(spec.root_filters, 7, strides=2, name="conv1_conv")(x)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    mid_name, mid, mid_stride, stride = mid_unit_name(depth), None, 0, ROOT_STRIDE
    for plan in plans:
        x = _unit(x, plan)
        stride *= plan.stride
        if plan.name == mid_name:
            mid, mid_stride = x, stride
    assert mid is not None
    # At output stride 32 the middle of conv4 sits at stride 16: take every other cell
    # (exact under align-corners: cell 2i at stride 16 is cell i at stride 32).
    if mid_stride != output_stride:
        factor = output_stride // mid_stride
        mid = layers.MaxPooling2D(1, strides=factor, name="mid_features_subsample")(mid)
    x = _bn("post_bn")(x)
    x = layers.Activation("relu", name="post_relu")(x)
    return keras.Model(image, {"features": x, "mid_features": mid}, name=name)


def preprocess(images):
    """Pixel values in [0, 255] (uint8 or float) -> float32 in [-1, 1] (``x / 127.5 - 1``).

    Any Keras backend's tensor or an array-like; returns the backend's tensor.
    """
    if not hasattr(images, "dtype"):
        images = np.asarray(images)
    try:
        dtype = keras.backend.standardize_dtype(images.dtype)
    except ValueError:  # e.g. NumPy strings or objects
        dtype = str(images.dtype)
    if not ("int" in dtype or "float" in dtype):
        raise TypeError(f"preprocess expects integer or float pixels, got {dtype}")
    return ops.cast(images, "float32") / 127.5 - 1.0
