"""Masked training losses of StrongPose (docs/MAPS.md "Loss weights",
docs/DESIGN.md section 1).

Terms (each reported separately, unweighted, plus the weighted ``total``); which maps
have a term, under which keys, and with which loss comes from the table in
``strongpose.maps`` (``MapSpec.loss``: ``sigmoid_ce`` or ``offset_l1``):

- ``heatmap``: sigmoid cross-entropy of ``heatmap_logits`` against ``heatmap``,
  weighted by ``heatmap_weight`` (ignore regions count nothing).
- ``body``: sigmoid cross-entropy of ``body_logits`` against ``body``, weighted by
  ``body_weight``.
- ``short`` / ``mid`` / ``long``: L1 distance ``(|dx| + |dy|) / R`` of each offset pair,
  weight channel ``c`` applying to channel pair ``c`` (``R = codec.disk_radius``).
- ``inter_heatmap`` / ``inter_short``: the same heat-map and short-range losses on the
  intermediate heads, present when the network outputs them.

``total = heatmap_w*heatmap + body_w*body + short_w*short + mid_w*mid + long_w*long
+ intermediate * (heatmap_w*inter_heatmap + short_w*inter_short)`` with the weights of
:class:`strongpose.config.LossConfig`.

Normalisation (correct under ``tf.distribute``): each term is first a per-image
weighted mean, ``sum(w * loss) / max(sum(w), 1)`` over that image's cells (and channels),
so an image with nothing to learn for a term adds 0; then the per-image values are
**summed and divided by the global batch size**. Every image's contribution therefore
depends on that image alone, and the losses of the replicas' shards add up exactly to the
loss of the whole batch (the ``tf.distribute`` convention for ``optimizer`` steps whose
gradients are summed across replicas). All arithmetic is float32, whatever the dtype of
the predictions, and written with ``keras.ops``, so the losses run on any Keras 3 backend
(TensorFlow, JAX) and return that backend's tensors.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from keras import ops

from strongpose import maps
from strongpose.config import Config

# Map keys: cross-entropy terms first, then offsets (heatmap, body, short, mid, long).
LOSS_TERMS: tuple[str, ...] = tuple(
    spec.key for loss in maps.LOSSES for spec in maps.MAPS if spec.loss == loss)
INTERMEDIATE_TERMS: tuple[str, ...] = tuple("inter_" + key for key in maps.INTERMEDIATE)

Tensor = Any  # a Keras backend tensor (Tensor, jax.Array, ...) or array-like


def _f32(x: Tensor) -> Tensor:
    """Any array or tensor as a float32 tensor of the Keras backend."""
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _static_shape(x: Tensor) -> Optional[tuple[Optional[int], ...]]:
    """The static shape as a tuple (None for unknown sizes), or None for an unknown rank."""
    shape = getattr(x, "shape", None)
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):  # unknown rank (TensorShape(None))
        return None


def _compatible(a: Optional[Sequence[Optional[int]]], b: Optional[Sequence[Optional[int]]]) -> bool:
    """Shapes agree where both are known (an unknown rank agrees with anything)."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _fmt(shape: Optional[Sequence[Optional[int]]]) -> str:
    return "<unknown>" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def _check_shapes(name: str, pred: Tensor, target: Tensor, weight: Tensor,
                  pairs: bool) -> None:
    """Raise a ValueError naming the map when static shapes disagree."""
    p, t, w = (_static_shape(x) for x in (pred, target, weight))
    if p is not None and len(p) != 4:
        raise ValueError(f"loss {name!r}: prediction must be (B, h, w, C), got shape {_fmt(p)}")
    if not _compatible(p, t):
        raise ValueError(f"loss {name!r}: prediction shape {_fmt(p)} does not match target "
                         f"shape {_fmt(t)}")
    expected_w = None if p is None else (
        p[:-1] + (p[-1] // 2 if (pairs and p[-1] is not None) else p[-1],))
    if not _compatible(expected_w, w):
        raise ValueError(
            f"loss {name!r}: weight shape {_fmt(w)} does not fit prediction shape {_fmt(p)} "
            f"({'one weight per channel pair' if pairs else 'one weight per channel'})")


def _per_image_mean(values: Tensor, weight: Tensor) -> Tensor:
    """``sum(w * v) / max(sum(w), 1)`` per image: (B, ...) -> (B,)."""
    axes = tuple(range(1, len(values.shape)))
    total = ops.sum(values * weight, axis=axes)
    count = ops.sum(weight, axis=axes)
    return total / ops.maximum(count, 1.0)


def _sigmoid_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Elementwise ``max(x, 0) - x*z + log(1 + exp(-|x|))`` (TensorFlow's stable formula)."""
    positive = logits >= 0
    relu = ops.where(positive, logits, ops.zeros_like(logits))
    neg_abs = ops.where(positive, -logits, logits)
    return relu - logits * labels + ops.log1p(ops.exp(neg_abs))


def sigmoid_ce_per_image(logits: Tensor, labels: Tensor, weight: Tensor,
                         name: str = "heatmap") -> Tensor:
    """Weighted mean sigmoid cross-entropy of each image, shape (B,), float32."""
    logits, labels, weight = _f32(logits), _f32(labels), _f32(weight)
    _check_shapes(name, logits, labels, weight, pairs=False)
    return _per_image_mean(_sigmoid_ce(logits, labels), weight)


def offset_l1_per_image(pred: Tensor, target: Tensor, weight: Tensor,
                        radius: float, name: str = "short") -> Tensor:
    """Weighted mean of ``(|dx| + |dy|) / radius`` over channel pairs of each image, shape (B,).

    ``pred`` and ``target`` are ``(B, h, w, 2C)``; ``weight`` is ``(B, h, w, C)`` and its
    channel ``c`` weighs channel pair ``(2c, 2c+1)``.
    """
    pred, target, weight = _f32(pred), _f32(target), _f32(weight)
    shape = _static_shape(pred)
    if shape and shape[-1] is not None and shape[-1] % 2:
        raise ValueError(f"loss {name!r}: offset maps need an even channel count, got {shape[-1]}")
    _check_shapes(name, pred, target, weight, pairs=True)
    diff = ops.abs(pred - target)
    l1 = (diff[..., 0::2] + diff[..., 1::2]) / radius
    return _per_image_mean(l1, weight)


class StrongPoseLoss:
    """All StrongPose losses; ``loss(targets, outputs, global_batch_size)`` -> dict.

    Args:
        heatmap, body, short, mid, long: loss weights (``cfg.loss``).
        intermediate: factor on the intermediate heat-map and short-range losses.
        disk_radius: R in input-image pixels; offsets' L1 is divided by it.
    """

    def __init__(self, heatmap: float = 4.0, body: float = 2.0, short: float = 1.0,
                 mid: float = 0.25, long: float = 0.125, intermediate: float = 1.0,
                 disk_radius: float = 32.0) -> None:
        if disk_radius <= 0:
            raise ValueError(f"disk_radius must be > 0, got {disk_radius}")
        self.weights = {"heatmap": float(heatmap), "body": float(body), "short": float(short),
                        "mid": float(mid), "long": float(long)}
        self.weights.update({f"inter_{key}": float(intermediate) * self.weights[key]
                             for key in maps.INTERMEDIATE})
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {self.weights}")
        self.disk_radius = float(disk_radius)

    @classmethod
    def from_config(cls, cfg: Config) -> "StrongPoseLoss":
        """The loss of a :class:`Config` (``cfg.loss`` weights, ``cfg.codec.disk_radius``)."""
        l = cfg.loss
        return cls(heatmap=l.heatmap, body=l.body, short=l.short, mid=l.mid, long=l.long,
                   intermediate=l.intermediate, disk_radius=cfg.codec.disk_radius)

    def per_image(self, targets: Mapping[str, Tensor],
                  outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each term's per-image value, shape (B,) float32 (unweighted, before batch sum)."""
        t, o = _require(targets, outputs)
        out = {key: self._term(key, o[maps.SPECS[key].output_key], t) for key in LOSS_TERMS}
        for key in maps.INTERMEDIATE:
            inter = maps.intermediate_output_key(key)
            if inter in o:
                out[f"inter_{key}"] = self._term(key, o[inter], t, f"inter_{key}")
        return out

    def _term(self, key: str, pred: Tensor, targets: Mapping[str, Tensor],
              name: Optional[str] = None) -> Tensor:
        """Map ``key``'s loss (its ``MapSpec.loss``) of ``pred`` against its target and weight."""
        spec = maps.SPECS[key]
        target, weight = targets[spec.key], targets[spec.weight_key]
        if spec.loss == "sigmoid_ce":
            return sigmoid_ce_per_image(pred, target, weight, name or key)
        if spec.loss == "offset_l1":
            return offset_l1_per_image(pred, target, weight, self.disk_radius, name or key)
        raise NotImplementedError(f"StrongPoseLoss: no loss {spec.loss!r} (map {key!r})")

    def __call__(self, targets: Mapping[str, Tensor], outputs: Mapping[str, Tensor],
                 global_batch_size: int | Tensor) -> dict[str, Tensor]:
        """Per-term losses (unweighted) and their weighted ``total``, float32 scalars.

        Each is the sum over this batch (or replica shard) of per-image losses divided by
        ``global_batch_size``, so shards' losses add up to the whole batch's loss.
        """
        if isinstance(global_batch_size, (int, float)) and (
                isinstance(global_batch_size, bool) or global_batch_size < 1
                or int(global_batch_size) != global_batch_size):
            raise ValueError(f"global_batch_size must be a positive integer, got {global_batch_size!r}")
        denom = ops.cast(global_batch_size, "float32")
        losses = {k: ops.sum(v) / denom for k, v in self.per_image(targets, outputs).items()}
        weighted = [self.weights[k] * v for k, v in losses.items()]
        total = weighted[0]
        for v in weighted[1:]:
            total = total + v
        losses["total"] = total
        return losses


_TARGET_KEYS = tuple(key for spec in maps.MAPS for key in (spec.key, spec.weight_key))
_OUTPUT_KEYS = maps.OUTPUT_KEYS


def _require(targets: Mapping[str, Tensor], outputs: Mapping[str, Tensor]):
    """Check the dicts carry every key the losses read; raise a KeyError listing the missing."""
    for what, d, keys in (("targets", targets, _TARGET_KEYS), ("outputs", outputs, _OUTPUT_KEYS)):
        missing = [k for k in keys if k not in d]
        if missing:
            raise KeyError(f"StrongPoseLoss: {what} lack keys {missing} (have {sorted(d)})")
    return targets, outputs
