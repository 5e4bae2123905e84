"""The decoder's boundary: maps are checked before anything reads them (docs/DECODER.md §0),
and network outputs become one image's probability maps.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
from scipy.special import expit

from strongpose.maps import SPECS, check_channels
from strongpose.skeleton import Skeleton

_WHERE = "decode"


def required_keys(use_long_range: bool, instance_masks: bool) -> tuple[str, ...]:
    """The maps the decoder reads with these options."""
    need = ("heatmap", "short", "mid")
    return need + (("long", "body") if use_long_range or instance_masks else ())


def check_maps(maps: Mapping[str, Any], keys: Iterable[str], skeleton: Skeleton) -> dict[str, np.ndarray]:
    """One image's maps as float32 NumPy arrays, after checking every one of ``keys``.

    Raises ValueError naming the map and what to do for: a missing map, a shape that is
    not (h, w, C) of one image with the skeleton's channels, NaN or Inf anywhere, and
    probabilities (``heatmap``, ``body``) outside [0, 1], which are logits passed by
    mistake.
    """
    keys = tuple(keys)
    check_channels(maps, keys, skeleton, _WHERE)
    out = {key: np.ascontiguousarray(maps[key], dtype=np.float32) for key in keys}
    shape = out[keys[0]].shape
    if len(shape) != 3 or min(shape[:2]) < 1:
        raise ValueError(f"{_WHERE}: {keys[0]!r} must be one image's map (h, w, C), got shape "
                         f"{shape}; batched network outputs go through Decoder.decode_outputs")
    for key, arr in out.items():
        if arr.shape[:2] != shape[:2] or arr.ndim != 3:
            raise ValueError(f"{_WHERE}: {key!r} has shape {arr.shape}, expected "
                             f"{shape[:2] + (arr.shape[-1],)} like {keys[0]!r}")
        _check_values(key, arr)
    return out


def _check_values(key: str, arr: np.ndarray) -> None:
    if SPECS[key].logits:                      # probabilities: [0, 1] (NaN fails it too)
        if arr.size and not (arr.min() >= 0 and arr.max() <= 1):
            if not np.isfinite(arr).all():
                _non_finite(key, arr)
            raise ValueError(f"{_WHERE}: {key!r} holds values outside [0, 1] (min {arr.min():.3g}, "
                             f"max {arr.max():.3g}): probabilities expected, these look like logits; "
                             f"apply a sigmoid, or pass network outputs to Decoder.decode_outputs")
    elif not np.isfinite(arr.sum()) and not np.isfinite(arr).all():   # NaN/Inf reach the sum
        _non_finite(key, arr)


def _non_finite(key: str, arr: np.ndarray) -> None:
    bad = int(arr.size - np.isfinite(arr).sum())
    raise ValueError(f"{_WHERE}: {key!r} holds {bad} NaN/Inf value(s); the network "
                     f"diverged or the map was built wrongly; nothing was decoded")


def outputs_to_maps(outputs: Mapping[str, Any], keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Batched network outputs (any Keras backend's tensors or arrays, ``(B, h, w, C)``) ->
    batched decoder maps as float32 NumPy, with the sigmoid applied to logits outputs."""
    maps = {}
    for key in keys:
        spec = SPECS[key]
        if spec.output_key not in outputs:
            raise ValueError(f"decode_outputs: network outputs lack {spec.output_key!r} "
                             f"(have {sorted(outputs)})")
        arr = np.asarray(outputs[spec.output_key], dtype=np.float32)
        if arr.ndim != 4:
            raise ValueError(f"decode_outputs: {spec.output_key!r} must be batched (B, h, w, C), "
                             f"got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"decode_outputs: {spec.output_key!r} holds NaN/Inf values; "
                             f"the network diverged; nothing was decoded")
        maps[key] = expit(arr).astype(np.float32) if spec.logits else arr
    return maps
