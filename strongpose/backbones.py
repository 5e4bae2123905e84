"""The backbones the project knows: names and widths/depths, without importing Keras.

``SPECS`` is the one table of backbones: :mod:`strongpose.resnet_v2` builds from it,
:mod:`strongpose.config` validates ``model.backbone`` against its names, and
:mod:`strongpose.backbone_weights` recognises which depth a weights file is for by its
units per stack. It lives apart from ``resnet_v2`` so that ``import strongpose.config``
(done by every command line before ``--help``) stays free of Keras and TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """Widths and depths of one ResNet v2.

    Attributes:
        root_filters: channels of the 7x7 root convolution ``conv1_conv``.
        stacks: ``(bottleneck filters, units)`` for conv2..conv5; a unit outputs 4x filters.
    """

    root_filters: int
    stacks: tuple[tuple[int, int], ...]

    @property
    def units(self) -> tuple[int, ...]:
        """Bottleneck units per stack, e.g. ``(3, 4, 23, 3)`` for ResNet-101."""
        return tuple(units for _, units in self.stacks)


SPECS: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(64, ((64, 3), (128, 4), (256, 6), (512, 3))),
    "resnet101": BackboneSpec(64, ((64, 3), (128, 4), (256, 23), (512, 3))),
    "resnet152": BackboneSpec(64, ((64, 3), (128, 8), (256, 36), (512, 3))),
    "tiny": BackboneSpec(16, ((8, 2), (16, 2), (32, 2), (64, 2))),
    "small": BackboneSpec(32, ((16, 2), (32, 2), (64, 2), (128, 2))),
}
BACKBONES: tuple[str, ...] = tuple(SPECS)   # "resnet50", "resnet101", "resnet152", "tiny", "small"
