"""Ground truth -> target maps and loss weights, exactly as ``docs/MAPS.md`` defines.

TensorFlow ops only, batched and graph-compatible: usable inside ``tf.data.Dataset.map``
and inside a ``tf.function`` train step. Nothing loops over people or pixels; every
quantity is computed for all cells, people and keypoint types at once.

    encoder = TargetEncoder.from_config(cfg)
    maps = encoder(inputs, map_size=(51, 51))   # inputs: MAPS.md "Targets input"

The largest intermediate is the squared-distance tensor between
every map cell and every keypoint (and a ``(B, h, w, P, E)`` one for limb segments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional

import tensorflow as tf

from strongpose import geometry, maps
from strongpose.skeleton import Skeleton

if TYPE_CHECKING:  # pragma: no cover - typing only (no runtime import of the config)
    from strongpose.config import Config

INPUT_KEYS: tuple[str, ...] = (
    "keypoints", "num_people", "person_masks", "has_mask", "crowd_mask", "unannotated_mask")
MAP_KEYS: tuple[str, ...] = maps.MAP_KEYS          # the table in strongpose/maps.py
WEIGHT_KEYS: tuple[str, ...] = maps.WEIGHT_KEYS

# Batched rank of each input (a single example has one less).
_BATCHED_RANK = {"keypoints": 4, "num_people": 1, "person_masks": 4, "has_mask": 2,
                 "crowd_mask": 3, "unannotated_mask": 3}

# Coordinate given to unlabelled keypoints (and to limbs with an unlabelled end) so that
# they lie outside every radius without a masking pass over the big distance tensors.
_FAR = 1.0e6


# --------------------------------------------------------------------------- public
def build_targets(inputs: Mapping[str, tf.Tensor], *, skeleton: Skeleton, stride: int,
                  map_size: tuple[int, int], disk_radius: float,
                  limb_radius: float) -> dict[str, tf.Tensor]:
    """Target maps and loss weights (MAPS.md keys) from padded ground truth.

    Args:
        inputs: the MAPS.md "Targets input" dict (``keypoints``, ``num_people``,
            ``person_masks``, ``has_mask``, ``crowd_mask``, ``unannotated_mask``),
            batched (leading B) or a single example (no B).
        skeleton: the keypoint set (K types, E tree edges).
        stride: output stride s; map cell (i, j) is input point (s*j, s*i).
        map_size: (h, w) of the maps.
        disk_radius: R, keypoint disk radius in input pixels.
        limb_radius: half-thickness of limbs drawn for people without a mask.

    Returns:
        float32 maps ``heatmap, short, mid, long, body`` and their weights
        ``*_weight``, shaped ``(B, h, w, C)`` (or ``(h, w, C)`` for a single example).

    Raises:
        ValueError: missing keys, wrong ranks, K not matching the skeleton, bad
            sizes, or (when shapes are static) masks whose size is not
            ``f*(h-1)+1 x f*(w-1)+1``; with dynamic shapes the mask check is a
            ``tf.debugging`` assertion (``InvalidArgumentError`` at run time).
    """
    h, w = _check_params(stride, map_size, disk_radius, limb_radius)
    tensors, single = _prepare_inputs(inputs, skeleton)
    out = _encode_batch(tensors, skeleton=skeleton, stride=float(stride), h=h, w=w,
                        disk_radius=float(disk_radius), limb_radius=float(limb_radius))
    if single:
        out = {k: v[0] for k, v in out.items()}
    return out


@dataclass(frozen=True)
class TargetEncoder:
    """Holds the codec constants; ``encoder(inputs, map_size)`` builds the targets."""

    skeleton: Skeleton
    stride: int
    disk_radius: float
    limb_radius: float

    def __post_init__(self) -> None:
        _check_params(self.stride, (1, 1), self.disk_radius, self.limb_radius)

    @classmethod
    def from_config(cls, cfg: "Config", stride: Optional[int] = None) -> "TargetEncoder":
        """Encoder for ``cfg`` (skeleton, codec radii); stride defaults to the training one."""
        return cls(skeleton=cfg.skeleton,
                   stride=int(stride if stride is not None else cfg.model.output_stride),
                   disk_radius=float(cfg.codec.disk_radius),
                   limb_radius=float(cfg.codec.limb_radius))

    def map_size_for(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Map (h, w) for an input image of (H, W) = (s*(h-1)+1, s*(w-1)+1) pixels."""
        return (geometry.map_size(input_size[0], self.stride),
                geometry.map_size(input_size[1], self.stride))

    def __call__(self, inputs: Mapping[str, tf.Tensor],
                 map_size: tuple[int, int]) -> dict[str, tf.Tensor]:
        """Target maps and weights for ``inputs`` at ``map_size`` = (h, w)."""
        return build_targets(inputs, skeleton=self.skeleton, stride=self.stride,
                             map_size=map_size, disk_radius=self.disk_radius,
                             limb_radius=self.limb_radius)


# ------------------------------------------------------------------- validation
def _check_params(stride: int, map_size: tuple[int, int], disk_radius: float,
                  limb_radius: float) -> tuple[int, int]:
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ValueError(f"targets: stride must be a positive integer, got {stride!r}")
    if len(map_size) != 2 or any(int(n) != n or n < 1 for n in map_size):
        raise ValueError(f"targets: map_size must be two positive integers (h, w), got {map_size!r}")
    if not disk_radius > 0:
        raise ValueError(f"targets: disk_radius must be > 0, got {disk_radius!r}")
    if not limb_radius > 0:
        raise ValueError(f"targets: limb_radius must be > 0, got {limb_radius!r}")
    return int(map_size[0]), int(map_size[1])


def _prepare_inputs(inputs: Mapping[str, tf.Tensor],
                    skeleton: Skeleton) -> tuple[dict[str, tf.Tensor], bool]:
    """Convert, check ranks and K, and add a batch axis to a single example."""
    missing = [k for k in INPUT_KEYS if k not in inputs]
    if missing:
        raise ValueError(f"targets: inputs lack {missing} (need {list(INPUT_KEYS)})")
    kp = tf.convert_to_tensor(inputs["keypoints"], dtype=tf.float32)
    if kp.shape.rank not in (3, 4):
        raise ValueError(f"targets: keypoints must be (B, P, K, 3) or (P, K, 3), got shape {kp.shape}")
    single = kp.shape.rank == 3
    k = skeleton.num_keypoints
    if kp.shape[-2] is not None and kp.shape[-2] != k:
        raise ValueError(f"targets: keypoints have {kp.shape[-2]} types, the skeleton has {k}")
    if kp.shape[-1] is not None and kp.shape[-1] != 3:
        raise ValueError(f"targets: keypoints must end in (x, y, v), got shape {kp.shape}")
    out = {"keypoints": kp,
           "num_people": tf.cast(tf.convert_to_tensor(inputs["num_people"]), tf.int32),
           "has_mask": tf.cast(tf.convert_to_tensor(inputs["has_mask"]), tf.bool)}
    for key in ("person_masks", "crowd_mask", "unannotated_mask"):
        out[key] = tf.convert_to_tensor(inputs[key])
    for key, rank in _BATCHED_RANK.items():
        want = rank - 1 if single else rank
        if out[key].shape.rank != want:
            raise ValueError(f"targets: {key} must have rank {want} "
                             f"({'single example' if single else 'batched'}), got shape {out[key].shape}")
    if single:
        out = {key: v[None] for key, v in out.items()}
    p = [out["keypoints"].shape[1], out["person_masks"].shape[1], out["has_mask"].shape[1]]
    if None not in p and len(set(p)) != 1:
        raise ValueError(f"targets: keypoints, person_masks and has_mask disagree on the number "
                         f"of people P: {p}")
    if p[0] == 0:
        raise ValueError("targets: keypoints need P >= 1 rows (pad with num_people)")
    return out, single


def _mask_factor(hm: int, wm: int, h: int, w: int, key: str) -> int:
    """The integer f with (hm-1) = f*(h-1) and (wm-1) = f*(w-1), or a ValueError."""
    f = (hm - 1) // (h - 1) if h > 1 else ((wm - 1) // (w - 1) if w > 1 else 1)
    if f < 1 or hm - 1 != f * (h - 1) or wm - 1 != f * (w - 1):
        raise ValueError(
            f"targets: {key} is {hm}x{wm}, maps are {h}x{w}: a mask must be "
            f"(f*(h-1)+1) x (f*(w-1)+1) for one integer f >= 1 (e.g. {h}x{w} or "
            f"{2 * (h - 1) + 1}x{2 * (w - 1) + 1})")
    return f


def _sample_mask(mask: tf.Tensor, h: int, w: int, key: str) -> tf.Tensor:
    """``mask[..., f*i, f*j]`` as bool ``(..., h, w)`` (align-corners subsampling)."""
    hm, wm = mask.shape[-2], mask.shape[-1]
    if hm is not None and wm is not None:
        f = _mask_factor(int(hm), int(wm), h, w, key)
        out = mask[..., ::f, ::f]
    else:
        shape = tf.shape(mask)
        dhm, dwm = shape[-2], shape[-1]
        f = (dhm - 1) // (h - 1) if h > 1 else ((dwm - 1) // (w - 1) if w > 1 else tf.constant(1))
        msg = (f"targets: {key} must be (f*(h-1)+1) x (f*(w-1)+1) for one integer f >= 1 "
               f"with (h, w) = ({h}, {w})")
        checks = [tf.debugging.assert_greater_equal(f, 1, message=msg),
                  tf.debugging.assert_equal(dhm - 1, f * (h - 1), message=msg),
                  tf.debugging.assert_equal(dwm - 1, f * (w - 1), message=msg)]
        with tf.control_dependencies(checks):
            out = tf.identity(mask)[..., ::f, ::f]
        out = tf.ensure_shape(out, mask.shape[:-2].concatenate([h, w]))
    return tf.cast(out, tf.bool)


# ---------------------------------------------------------------------- encoding
def _gather_rows(table: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """``table[b, index[b, ...]]``: table (B, N, ...), index (B, ...) int32 -> (B, ..., ...)."""
    shape = tf.shape(index)
    flat = tf.gather(table, tf.reshape(index, [shape[0], -1]), batch_dims=1)
    return tf.reshape(flat, tf.concat([shape, tf.shape(table)[2:]], axis=0))


def _masked(cond: tf.Tensor, vec: tf.Tensor) -> tf.Tensor:
    """(..., N, 2) vectors where ``cond`` (..., N), else 0; flattened to (..., 2N) (dx, dy).

    A product with the 0/1 mask, repeated per component (no broadcast ``tf.where``: the
    slowest op of the encoder). The vectors are finite, so the values are those of a select.
    """
    shape = tf.shape(vec)
    flat = tf.concat([shape[:-2], [shape[-2] * 2]], axis=0)
    return tf.reshape(vec, flat) * tf.repeat(tf.cast(cond, tf.float32), 2, axis=-1)


def _limb_bodies(xy: tf.Tensor, labelled: tf.Tensor, d2: tf.Tensor, gx: tf.Tensor,
                 gy: tf.Tensor, skeleton: Skeleton, limb_radius: float) -> tf.Tensor:
    """Bodies drawn from keypoints: limbs and keypoint disks of radius limb_radius.

    xy: (B, P, K, 2) with unlabelled points moved far away; labelled: (B, P, K);
    d2: (B, h, w, K, P) squared cell-keypoint distances. Returns bool (B, h, w, P).
    """
    r2 = limb_radius * limb_radius
    near_kp = tf.reduce_min(d2, axis=3) <= r2
    if skeleton.num_edges == 0:
        return near_kp
    ea = tf.constant([a for a, _ in skeleton.edges], tf.int32)
    eb = tf.constant([b for _, b in skeleton.edges], tf.int32)
    both = tf.gather(labelled, ea, axis=2) & tf.gather(labelled, eb, axis=2)   # (B, P, E)
    far = tf.fill(tf.shape(both), _FAR)
    ax = tf.where(both, tf.gather(xy[..., 0], ea, axis=2), far)
    ay = tf.where(both, tf.gather(xy[..., 1], ea, axis=2), far)
    sx = tf.where(both, tf.gather(xy[..., 0], eb, axis=2), far) - ax   # segment vector
    sy = tf.where(both, tf.gather(xy[..., 1], eb, axis=2), far) - ay
    length2 = tf.maximum(sx * sx + sy * sy, 1e-12)
    # Cell minus segment start, separable in x (B, 1, w, P, E) and y (B, h, 1, P, E).
    px = gx[None, None, :, None, None] - ax[:, None, None]
    py = gy[None, :, None, None, None] - ay[:, None, None]
    sx5, sy5 = sx[:, None, None], sy[:, None, None]
    t = tf.clip_by_value((px * sx5 + py * sy5) / length2[:, None, None], 0.0, 1.0)
    ex = px - t * sx5
    ey = py - t * sy5
    near_limb = tf.reduce_min(ex * ex + ey * ey, axis=4) <= r2
    return near_kp | near_limb


def _encode_batch(x: Mapping[str, tf.Tensor], *, skeleton: Skeleton, stride: float, h: int,
                  w: int, disk_radius: float, limb_radius: float) -> dict[str, tf.Tensor]:
    """The encoder proper on batched, checked inputs."""
    k_count = skeleton.num_keypoints
    kp = x["keypoints"]
    batch_size, p_count = tf.shape(kp)[0], tf.shape(kp)[1]
    valid = tf.range(p_count)[None, :] < x["num_people"][:, None]               # (B, P)
    labelled = (kp[..., 2] > 0) & valid[:, :, None]                              # (B, P, K)
    xy = tf.where(labelled[..., None], kp[..., :2], tf.fill(tf.shape(kp[..., :2]), _FAR))
    xy_flat = tf.reshape(xy, [batch_size, -1, 2])                                # (B, P*K, 2)
    labelled_flat = tf.reshape(labelled, [batch_size, -1])                       # (B, P*K)

    gx = tf.range(w, dtype=tf.float32) * stride
    gy = tf.range(h, dtype=tf.float32) * stride
    cell = tf.stack(tf.meshgrid(gx, gy), axis=-1)[None, :, :, None, :]            # (1, h, w, 1, 2)

    # Squared distance of every cell to every keypoint, separable, people last (the
    # reductions over people run along the innermost axis): (B, h, w, K, P).
    xt = tf.transpose(xy, [0, 2, 1, 3])                                          # (B, K, P, 2)
    dx2 = tf.square(gx[None, :, None, None] - xt[:, None, :, :, 0])            # (B, w, K, P)
    dy2 = tf.square(gy[None, :, None, None] - xt[:, None, :, :, 1])            # (B, h, K, P)
    d2 = dy2[:, :, None] + dx2[:, None]

    # Keypoint disks and short-range offsets to the nearest keypoint of each type.
    nearest = tf.argmin(d2, axis=4, output_type=tf.int32)                        # (B, h, w, K)
    disk = tf.reduce_min(d2, axis=4) <= disk_radius * disk_radius                # (B, h, w, K)
    types = tf.range(k_count, dtype=tf.int32)
    short = _masked(disk, _gather_rows(xy_flat, nearest * k_count + types) - cell)

    # Mid-range: directed edge (a, b) at a's disk, to the same person's b.
    dir_edges = skeleton.directed_edges
    if dir_edges:
        ea = tf.constant([a for a, _ in dir_edges], tf.int32)
        eb = tf.constant([b for _, b in dir_edges], tf.int32)
        mid_index = tf.gather(nearest, ea, axis=-1) * k_count + eb               # (B, h, w, 2E)
        mid_w = tf.gather(disk, ea, axis=-1) & _gather_rows(labelled_flat, mid_index)
        mid = _masked(mid_w, _gather_rows(xy_flat, mid_index) - cell)
    else:
        zeros = tf.zeros_like(disk[..., :0], tf.float32)
        mid_w, mid = tf.cast(zeros, tf.bool), zeros

    # Bodies: masks where the person has one, else limbs and keypoint disks.
    masks = tf.transpose(_sample_mask(x["person_masks"], h, w, "person_masks"), [0, 2, 3, 1])
    # Limbs only where a person present has no mask (COCO: rarely): the rest never read them.
    drawn = tf.cond(tf.reduce_any(valid & ~x["has_mask"]),
                    lambda: _limb_bodies(xy, labelled, d2, gx, gy, skeleton, limb_radius),
                    lambda: tf.zeros_like(masks))                                # (B, h, w, P)
    person_body = tf.where(x["has_mask"][:, None, None, :], masks, drawn) & valid[:, None, None, :]
    unannotated = _sample_mask(x["unannotated_mask"], h, w, "unannotated_mask")  # (B, h, w)
    crowd = _sample_mask(x["crowd_mask"], h, w, "crowd_mask")
    annotated = tf.reduce_any(person_body, axis=-1)
    body = annotated | unannotated

    # Long-range: cells in exactly one body (the unannotated mask counts as a body).
    count = tf.reduce_sum(tf.cast(person_body, tf.int32), axis=-1) + tf.cast(unannotated, tf.int32)
    one_owner = (count == 1) & annotated
    owner = tf.argmax(tf.cast(person_body, tf.int32), axis=-1, output_type=tf.int32)
    long_w = one_owner[..., None] & _gather_rows(labelled, owner)                # (B, h, w, K)
    long = _masked(long_w, _gather_rows(xy, owner) - cell)

    ignore = (crowd | unannotated)[..., None]
    f32 = lambda t: tf.cast(t, tf.float32)  # noqa: E731
    out = {
        "heatmap": f32(disk),
        "short": short,
        "mid": mid,
        "long": long,
        "body": f32(body)[..., None],
        "heatmap_weight": f32(~ignore | disk),
        "short_weight": f32(disk),
        "mid_weight": f32(mid_w),
        "long_weight": f32(long_w),
        "body_weight": f32(~crowd)[..., None],
    }
    channels = {spec.key: spec.channels(skeleton) for spec in maps.MAPS}
    channels.update({spec.weight_key: spec.weight_channels(skeleton) for spec in maps.MAPS})
    if set(out) != set(channels):  # a map added to strongpose/maps.py needs its encoder here
        raise NotImplementedError(f"targets: encoder writes {sorted(out)}, the map table has "
                                  f"{sorted(channels)}")
    batch = kp.shape[0]
    return {key: tf.ensure_shape(v, [batch, h, w, channels[key]]) for key, v in out.items()}
