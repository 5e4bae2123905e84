"""One random geometric + photometric augmentation of one training example (TensorFlow ops).

Graph-compatible (``tf.data.Dataset.map``, ``tf.function``): no NumPy on the tensors, no
``py_function``. Deterministic for a given seed: every random draw is a
``tf.random.stateless_*`` op fed from ``seed`` (an int32/int64 tensor of shape (2,)).

    augmenter = Augmenter.from_config(cfg)                 # training
    out = augmenter(example, seed)                         # seed: shape (2,)
    evaluation = Augmenter.from_config(cfg, augment=False) # resize/pad only

Input ``example`` (one image, no batch axis):

=================== ================= ==============================================
key                 shape / dtype     meaning
=================== ================= ==============================================
``image``           (H, W, 3) uint8   RGB (any numeric dtype, values 0..255)
``instance_map``    (H, W) int        0 background, j + 1 on person j's mask
``crowd_mask``      (H, W) uint8      optional (zeros when absent)
``unannotated_mask`` (H, W) uint8     optional (zeros when absent)
``keypoints``       (P, K, 3) float32 x, y (pixels), v; rows with v = 0 are ignored
``num_people``      () int32          people present (rows beyond are padding)
=================== ================= ==============================================

Any other key (``has_mask``, an image id, ...) is passed through unchanged.

Output (S = ``input_size`` = s*n + 1):

=================== ================== ==============================================
``image``           (S, S, 3) float32  RGB 0..255 (what ``build_model`` takes); 0 outside
                                       the warped image
``instance_map``    (S, S) int32       warped with nearest neighbour, fill 0 (with
                                       ``masks_on_grid``: (S', S'), S' = (S - 1) / f + 1,
                                       the crop's every f-th pixel; also both masks)
``person_masks``    (P, hm, wm) uint8  ``instance_map == j + 1`` read at every
                                       ``mask_factor``-th pixel (hm - 1 = (S - 1) / f);
                                       left out when ``mask_factor`` is None
``crowd_mask``      (S, S) uint8       nearest, fill 0
``unannotated_mask`` (S, S) uint8      nearest, fill 0
``keypoints``       (P, K, 3) float32  transformed; v = 0 where the point left the crop
``num_people``      () int32           unchanged
``matrix``          (3, 3) float32     the forward transform: input pixel -> crop pixel
                                       (flip included)
``flipped``         () bool            whether the example was mirrored
=================== ================== ==============================================

Conventions:

* Pixel centres are at integer coordinates (pixel ``[i, j]`` is the point
  ``(x, y) = (j, i)``), as everywhere in the project (map cell ``(i, j)`` is point
  ``(s*j, s*i)``; the mirror is ``x -> W - 1 - x``), and as
  ``tf.raw_ops.ImageProjectiveTransformV3`` samples. Keypoints go through the same
  matrix as the pixels, so a keypoint drawn on the image lands where its transformed
  coordinates say.
* The transform, input to crop: mirror (with probability ``flip_probability``:
  ``x -> W - 1 - x``), then about the image centre ``((W-1)/2, (H-1)/2)``: rotate by
  ``U(-rotation_deg, rotation_deg)``, scale by ``base * U(scale_range)`` where ``base =
  (S - 1) / (max(H, W) - 1)`` fits the longer side to the crop, and put the centre at the
  crop centre ``((S-1)/2, (S-1)/2)`` plus a shift ``U(-max_shift, max_shift) * (S - 1)``
  per axis. With the default ``max_shift = 0.5`` the image centre stays anywhere inside
  the crop (translation policy: uniform over the crop, not centred on a person).
* Colour jitter, one affine map of RGB per image ``x -> x @ A + b``: brightness
  ``+U(-b, b)`` (of 255), contrast ``(x - mean) * U(1-c, 1+c) + mean`` (``mean``: the
  source image's per-channel mean, from every 4th pixel of every 4th row), saturation
  ``* U(1-s, 1+s)`` and hue ``+U(-h, h)`` turns (both in YIQ); clipped to 0..255. It is
  split around the warp (which commutes with it): the shift ``b / contrast`` goes on the
  source, the matrix ``A`` on the crop, so the fill outside the image stays exactly 0 and
  the per-pixel work is on the crop, not the (larger) source. The clip comes after the
  interpolation: where a saturated pixel borders others the crop differs from jittering
  the source first by up to some levels (about 2% of pixels > 1 level on COCO images).
* The image is warped only over the box of crop pixels it can reach (the rest is the
  fill, 0): the same pixels as warping the whole crop, within float rounding.
* Identity mode (``augment=False``): no flip, no rotation, scale ``base``, no jitter, the
  image at the top-left corner: a pure align-corners resize of the longer side to S and a
  zero pad right and bottom, the Predictor's input (the matrix says how to map results
  back). It was centred once: an overfitted network then scored AP 0.92 on its training
  crops and 0.43 on the same images placed as the Predictor places them.

Left to the pipeline: decoding and padding people to P = ``codec.max_people``,
``has_mask`` (passed through), batching, and the target maps (``TargetEncoder``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

import tensorflow as tf

from strongpose import geometry
from strongpose.flip import flip_keypoints
from strongpose.skeleton import Skeleton

if TYPE_CHECKING:  # pragma: no cover - typing only
    from strongpose.config import Config

REQUIRED_KEYS: tuple[str, ...] = ("image", "instance_map", "keypoints", "num_people")
OPTIONAL_MASKS: tuple[str, ...] = ("crowd_mask", "unannotated_mask")
_NUM_SEEDS = 8
_MEAN_STEP = 4                     # the contrast centre is the mean of every 4th pixel


@dataclass(frozen=True)
class Augmenter:
    """Plain-value augmentation parameters; ``augmenter(example, seed)`` augments one example.

    Attributes:
        skeleton: keypoint set (K and the flip permutation).
        input_size: crop side S = s*n + 1.
        scale_range: (low, high) of the random scale, relative to the fit of the longer side.
        rotation_deg: rotations are uniform in +-this many degrees.
        flip_probability: chance of a horizontal mirror.
        max_shift: the image centre moves uniformly by +-this share of (S - 1) per axis.
        brightness, contrast, saturation, hue: colour jitter ranges (0 turns one off).
        augment: False: identity mode (fit, top-left, nothing random).
        mask_factor: person_masks are read at every f-th crop pixel; None: not produced.
        masks_on_grid: warp the instance map and masks straight onto that grid of every
            f-th crop pixel ((S - 1) / f + 1 per side: what the target encoder reads), not
            the whole crop: the same values, f^2 fewer pixels.
        make_person_masks: False leaves ``person_masks`` out even with a ``mask_factor``
            (for a caller whose ``instance_map`` packs more than person ids and who cuts
            the masks itself, e.g. :func:`person_masks` after unpacking).
    """

    skeleton: Skeleton
    input_size: int
    scale_range: tuple[float, float] = (0.7, 1.3)
    rotation_deg: float = 25.0
    flip_probability: float = 0.5
    max_shift: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    augment: bool = True
    mask_factor: Optional[int] = 1
    masks_on_grid: bool = False
    make_person_masks: bool = True

    def __post_init__(self) -> None:
        s = self.input_size
        if isinstance(s, bool) or int(s) != s or s < 2:
            raise ValueError(f"augment: input_size must be an integer >= 2, got {s!r}")
        lo, hi = (float(v) for v in self.scale_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"augment: scale_range {self.scale_range!r} needs 0 < low <= high")
        checks = (("rotation_deg", self.rotation_deg, 0.0, 180.0),
                  ("flip_probability", self.flip_probability, 0.0, 1.0),
                  ("max_shift", self.max_shift, 0.0, 10.0),
                  ("brightness", self.brightness, 0.0, 1.0),
                  ("contrast", self.contrast, 0.0, 1.0),
                  ("saturation", self.saturation, 0.0, 1.0),
                  ("hue", self.hue, 0.0, 0.5))
        for name, value, low, high in checks:
            if not (math.isfinite(float(value)) and low <= float(value) <= high):
                raise ValueError(f"augment: {name} must be in [{low}, {high}], got {value!r}")
        f = self.mask_factor
        if f is not None and (isinstance(f, bool) or int(f) != f or f < 1 or (s - 1) % f):
            raise ValueError(f"augment: mask_factor must be None or an integer f >= 1 dividing "
                             f"input_size - 1 = {s - 1}, got {f!r}")

    @classmethod
    def from_config(cls, cfg: "Config", augment: bool = True, mask_factor: Optional[int] = 1,
                    masks_on_grid: bool = False, make_person_masks: bool = True) -> "Augmenter":
        """Augmenter for ``cfg``: skeleton, ``model.input_size`` and ``data.*`` ranges."""
        return cls(skeleton=cfg.skeleton, input_size=int(cfg.model.input_size),
                   scale_range=tuple(float(v) for v in cfg.data.scale_range),
                   rotation_deg=float(cfg.data.rotation_deg),
                   flip_probability=float(cfg.data.flip_probability),
                   augment=bool(augment), mask_factor=mask_factor,
                   masks_on_grid=bool(masks_on_grid), make_person_masks=bool(make_person_masks))

    @property
    def mask_size(self) -> Optional[int]:
        """Side of ``person_masks`` (``(S - 1) / mask_factor + 1``), or None."""
        return None if self.mask_factor is None else (self.input_size - 1) // self.mask_factor + 1

    def __call__(self, example: Mapping[str, Any], seed: Any = (0, 0)) -> dict[str, tf.Tensor]:
        """Augment one example (see the module docstring for keys and conventions)."""
        return _augment(self, example, seed)


# ------------------------------------------------------------------ validation
def _check_inputs(aug: Augmenter, example: Mapping[str, Any], seed: Any) -> dict[str, tf.Tensor]:
    if not isinstance(example, Mapping):
        raise ValueError(f"augment: example must be a mapping of tensors, got {type(example).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in example]
    if missing:
        raise ValueError(f"augment: example lacks {missing} (need {list(REQUIRED_KEYS)}, "
                         f"optionally {list(OPTIONAL_MASKS)})")
    image = tf.convert_to_tensor(example["image"])
    if image.shape.rank != 3 or (image.shape[-1] is not None and image.shape[-1] != 3):
        raise ValueError(f"augment: image must be (H, W, 3), got shape {image.shape}")
    if not (image.dtype.is_integer or image.dtype.is_floating):
        raise ValueError(f"augment: image must be numeric, got {image.dtype.name}")
    out = {"image": image}
    inst = tf.convert_to_tensor(example["instance_map"])
    if not inst.dtype.is_integer:
        raise ValueError(f"augment: instance_map must be integer, got {inst.dtype.name}")
    out["instance_map"] = inst
    for key in OPTIONAL_MASKS:
        if key in example and example[key] is not None:
            out[key] = tf.convert_to_tensor(example[key])
    for key in ("instance_map",) + OPTIONAL_MASKS:
        if key not in out:
            continue
        t = out[key]
        if t.shape.rank != 2:
            raise ValueError(f"augment: {key} must be (H, W), got shape {t.shape}")
        for axis in (0, 1):
            a, b = t.shape[axis], image.shape[axis]
            if a is not None and b is not None and a != b:
                raise ValueError(f"augment: {key} is {tuple(t.shape)}, the image is "
                                 f"{tuple(image.shape[:2])}: they must be the same size")
    kp = tf.convert_to_tensor(example["keypoints"], dtype_hint=tf.float32)
    k = aug.skeleton.num_keypoints
    if (kp.shape.rank != 3 or (kp.shape[1] is not None and kp.shape[1] != k)
            or (kp.shape[2] is not None and kp.shape[2] != 3)):
        raise ValueError(f"augment: keypoints must be (P, {k}, 3) (x, y, v) for the skeleton's "
                         f"{k} keypoints, got shape {kp.shape}")
    out["keypoints"] = tf.cast(kp, tf.float32)
    n = tf.convert_to_tensor(example["num_people"])
    if n.shape.rank not in (None, 0):
        raise ValueError(f"augment: num_people must be a scalar, got shape {n.shape}")
    out["num_people"] = tf.cast(n, tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1 or (seed.shape[0] is not None and seed.shape[0] != 2) \
            or not seed.dtype.is_integer:
        raise ValueError(f"augment: seed must be an integer tensor of shape (2,), got "
                         f"{seed.dtype.name} {seed.shape}")
    out["seed"] = tf.cast(seed, tf.int64)
    return out


# -------------------------------------------------------------------- transform
def _matrix(scale: tf.Tensor, angle: tf.Tensor, shift: tf.Tensor, flip: tf.Tensor,
            width: tf.Tensor, height: tf.Tensor, size: int) -> tf.Tensor:
    """Forward 3x3 (input pixel -> crop pixel): mirror, then rotate/scale about the image
    centre, then centre + shift in the crop. All float32 scalars except shift (2,)."""
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    c = (size - 1.0) / 2.0
    sign = tf.where(flip, -1.0, 1.0)          # the mirror x -> W-1-x is x-cx -> -(x-cx)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    a00, a01 = cos * sign, -sin
    a10, a11 = sin * sign, cos
    tx = c + shift[0] - (a00 * cx + a01 * cy)
    ty = c + shift[1] - (a10 * cx + a11 * cy)
    zero, one = tf.zeros_like(scale), tf.ones_like(scale)
    return tf.reshape(tf.stack([a00, a01, tx, a10, a11, ty, zero, zero, one]), [3, 3])


def _warp(images: tf.Tensor, inverse: tf.Tensor, shape: Any, interpolation: str) -> tf.Tensor:
    """ImageProjectiveTransformV3 of (1, H, W, C) to (1, *shape, C) with the output->input
    ``inverse``."""
    transform = tf.reshape(inverse, [9])[:8][None]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transform, output_shape=tf.cast(shape, tf.int32),
        fill_value=tf.constant(0.0, tf.float32), interpolation=interpolation,
        fill_mode="CONSTANT")


# RGB <-> YIQ: hue is a rotation of (I, Q), saturation a scaling of it (Y is the luma).
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _stack_masks(masks: list[tf.Tensor]) -> tf.Tensor:
    """(H, W, M) of integer (H, W) masks, in a dtype the warp takes: their own when they
    share uint8, int32 or int64 (no full-size cast), else int32."""
    dtypes = {m.dtype for m in masks}
    dtype = dtypes.pop() if len(dtypes) == 1 else tf.int32
    if dtype not in (tf.uint8, tf.int32, tf.int64):
        dtype = tf.int32
    masks = [tf.cast(m, dtype) for m in masks]
    return masks[0][..., None] if len(masks) == 1 else tf.stack(masks, axis=-1)


def _jitter_params(aug: Augmenter, mean: tf.Tensor, seeds: tf.Tensor
                   ) -> tuple[tf.Tensor, tf.Tensor]:
    """``(shift, A)``: the colour jitter of RGB 0..255 as ``x -> (x + shift) @ A`` (row
    vectors; then clipped).

    brightness ``+ U(-b, b)`` (of 255); contrast ``(x - mean) * U(1-c, 1+c) + mean``
    (``mean``: the source image's per-channel mean); saturation and hue in YIQ: (I, Q)
    scaled by ``U(1-s, 1+s)`` and rotated by ``U(-h, h)`` turns. All three compose into
    ``x @ A + b``, written ``(x + shift) @ A`` with ``shift = b' / contrast`` so that the
    shift can go on the source and the matrix on the crop (a warp commutes with both).
    """
    def uniform(i: int, r: float) -> tf.Tensor:
        if r <= 0:
            return tf.constant(0.0)
        return tf.random.stateless_uniform([], seeds[i], -r, r, dtype=tf.float32)

    contrast = tf.maximum(1.0 + uniform(5, aug.contrast), 1e-3)
    bias = 255.0 * uniform(4, aug.brightness) + (1.0 - contrast) * mean   # x*c + (1-c)*mean + db
    sat = 1.0 + uniform(6, aug.saturation)
    theta = 2.0 * math.pi * uniform(7, aug.hue)
    cos, sin = tf.cos(theta) * sat, tf.sin(theta) * sat
    zero, one = tf.zeros_like(cos), tf.ones_like(cos)
    chroma = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos]), [3, 3])
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    colour = tf.linalg.inv(to_yiq) @ chroma @ to_yiq                 # column vectors: y = C x
    return bias / contrast, contrast * tf.transpose(colour)


def _channel_mean(image: tf.Tensor) -> tf.Tensor:
    """(3,) per-channel mean of an (H, W, 3) image, estimated from every 4th pixel of every
    4th row (a 16th of the pixels: the contrast centre, not worth a full pass)."""
    sample = tf.cast(image[::_MEAN_STEP, ::_MEAN_STEP], tf.float32)
    columns = tf.reduce_sum(tf.reshape(sample, [tf.shape(sample)[0], -1]), axis=0)
    total = tf.reduce_sum(tf.reshape(columns, [-1, 3]), axis=0)    # rows summed first: cheap
    return total / tf.cast(tf.shape(sample)[0] * tf.shape(sample)[1], tf.float32)


def _image_box(matrix: tf.Tensor, width: tf.Tensor, height: tf.Tensor, size: int
               ) -> tuple[tf.Tensor, tf.Tensor]:
    """((y0, x0), (y1, x1)) int32: the crop pixels, end exclusive, that the warped image can
    reach (its rim of bilinear reads and one pixel of slack included; at least one pixel).
    Every crop pixel outside is the fill, 0."""
    corners = tf.stack([[-1.0, -1.0, 1.0], [width, -1.0, 1.0], [-1.0, height, 1.0],
                        [width, height, 1.0]])
    xy = tf.linalg.matmul(corners, matrix, transpose_b=True)[:, :2]
    lo = tf.clip_by_value(tf.floor(tf.reduce_min(xy, 0)) - 1.0, 0.0, size - 1.0)
    hi = tf.clip_by_value(tf.math.ceil(tf.reduce_max(xy, 0)) + 2.0, lo + 1.0, float(size))
    return tf.cast(lo[::-1], tf.int32), tf.cast(hi[::-1], tf.int32)


def _source_window(inverse: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, width: tf.Tensor,
                   height: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """((y0, x0), (y1, x1)) int32: the source pixels, end exclusive, that the bilinear warp
    of crop box ``[lo, hi)`` reads (one pixel of slack; at least one pixel)."""
    y0, x0 = tf.unstack(tf.cast(lo, tf.float32))
    y1, x1 = tf.unstack(tf.cast(hi, tf.float32) - 1.0)
    corners = tf.stack([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])
    xy = tf.linalg.matmul(corners, inverse, transpose_b=True)
    xy = xy[:, :2] / xy[:, 2:]
    size = tf.stack([width, height])
    start = tf.clip_by_value(tf.floor(tf.reduce_min(xy, 0)) - 1.0, 0.0, size - 1.0)
    end = tf.clip_by_value(tf.math.ceil(tf.reduce_max(xy, 0)) + 2.0, start + 1.0, size)
    return tf.cast(start[::-1], tf.int32), tf.cast(end[::-1], tf.int32)


def _translation(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """3x3 float32 ``p -> p + (x, y)``."""
    x, y = tf.cast(x, tf.float32), tf.cast(y, tf.float32)
    return tf.stack([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def _warp_image(aug: Augmenter, image: tf.Tensor, matrix: tf.Tensor, inverse: tf.Tensor,
                seeds: Optional[tf.Tensor]) -> tf.Tensor:
    """The (S, S, 3) float32 crop of an (H, W, 3) image: bilinear warp of only the box the
    image reaches (zeros around it, as a whole warp gives), read from only the window of
    the source that box sees. With ``seeds``, the colour jitter: its shift added to that
    window, its matrix applied to the box (so the fill stays 0), then clipped to 0..255."""
    size = int(aug.input_size)
    shape = tf.shape(image)
    width, height = tf.cast(shape[1], tf.float32), tf.cast(shape[0], tf.float32)
    lo, hi = _image_box(matrix, width, height, size)
    start, end = _source_window(inverse, lo, hi, width, height)
    img = tf.cast(image[start[0]:end[0], start[1]:end[1]], tf.float32)
    if seeds is not None:
        shift, colour = _jitter_params(aug, _channel_mean(image), seeds)
        img = tf.nn.bias_add(img, shift)
    transform = _translation(-start[1], -start[0]) @ inverse @ _translation(lo[1], lo[0])
    part = _warp(img[None], transform, hi - lo, "BILINEAR")[0]
    if seeds is not None:
        rows = tf.linalg.matmul(tf.reshape(part, [-1, 3]), colour)
        part = tf.reshape(tf.clip_by_value(rows, 0.0, 255.0), tf.shape(part))
    pad = tf.stack([[lo[0], size - hi[0]], [lo[1], size - hi[1]], [0, 0]])
    return tf.ensure_shape(tf.pad(part, pad), [size, size, 3])


def _augment(aug: Augmenter, example: Mapping[str, Any], seed: Any) -> dict[str, tf.Tensor]:
    t = _check_inputs(aug, example, seed)
    size = int(aug.input_size)
    image, kp = t["image"], t["keypoints"]
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    checks = [tf.debugging.assert_equal(tf.shape(t[key]), shape[:2],
                                        message=f"augment: {key} and image differ in size")
              for key in ("instance_map",) + OPTIONAL_MASKS if key in t]
    base = (size - 1.0) / tf.maximum(tf.maximum(height, width) - 1.0, 1.0)

    seeds = None
    if aug.augment:
        seeds = tf.random.experimental.stateless_split(t["seed"], num=_NUM_SEEDS)
        lo, hi = (float(v) for v in aug.scale_range)
        scale = base * tf.random.stateless_uniform([], seeds[0], lo, hi) if hi > lo else base * lo
        rad = math.radians(aug.rotation_deg)
        angle = tf.random.stateless_uniform([], seeds[1], -rad, rad) if rad > 0 else tf.constant(0.0)
        reach = aug.max_shift * (size - 1.0)
        shift = (tf.random.stateless_uniform([2], seeds[2], -reach, reach) if reach > 0
                 else tf.zeros([2], tf.float32))
        flip = tf.random.stateless_uniform([], seeds[3], 0.0, 1.0) < aug.flip_probability
    else:
        scale, angle, flip = base, tf.constant(0.0), tf.constant(False)
        # The image at the top-left corner, as the Predictor places it: the crop is the
        # Predictor's input (a resize plus a zero pad right and bottom), so a network
        # trained without augmentation is evaluated on the pixels it was trained on.
        c = (size - 1.0) / 2.0
        shift = base * tf.stack([width - 1.0, height - 1.0]) / 2.0 - c
    matrix = _matrix(scale, angle, shift, flip, width, height, size)
    inverse = tf.linalg.inv(matrix)
    inverse = inverse / inverse[2, 2]

    jitter = aug.augment and bool(aug.brightness or aug.contrast or aug.saturation or aug.hue)
    with tf.control_dependencies(checks):
        img = _warp_image(aug, image, matrix, inverse, seeds if jitter else None)

    mask_keys = ("instance_map",) + tuple(k for k in OPTIONAL_MASKS if k in t)
    stacked = _stack_masks([t[k] for k in mask_keys])[None]
    grid = aug.mask_factor if aug.masks_on_grid and aug.mask_factor else 1
    msize = (size - 1) // grid + 1                  # grid cell (u, v) is crop pixel (g u, g v)
    to_crop = tf.constant([[grid, 0, 0], [0, grid, 0], [0, 0, 1]], tf.float32)
    warped = _warp(stacked, inverse @ to_crop, [msize, msize], "NEAREST")[0]
    out: dict[str, tf.Tensor] = {
        key: value for key, value in example.items()
        if key not in REQUIRED_KEYS + OPTIONAL_MASKS}
    out["image"] = img
    out["instance_map"] = tf.ensure_shape(tf.cast(warped[..., 0], tf.int32), [msize, msize])
    for i, key in enumerate(mask_keys[1:], start=1):
        out[key] = tf.ensure_shape(tf.cast(warped[..., i], tf.uint8), [msize, msize])
    for key in OPTIONAL_MASKS:
        if key not in out:
            out[key] = tf.zeros([msize, msize], tf.uint8)

    # Keypoints: the mirror as flip.flip_keypoints (x -> W-1-x, left/right swapped), then
    # the rest of the matrix (the mirror taken out of it).
    kp_in = tf.where(flip, flip_keypoints(kp, width, aug.skeleton), kp)
    unflip = tf.linalg.diag(tf.stack([tf.where(flip, -1.0, 1.0), 1.0, 1.0]))
    mirror = tf.tensor_scatter_nd_update(unflip, [[0, 2]], [tf.where(flip, width - 1.0, 0.0)])
    rest = matrix @ mirror                   # matrix = rest @ mirror; mirror is its own inverse
    xy = tf.einsum("pkj,ij->pki", kp_in[..., :2], rest[:2, :2]) + rest[:2, 2]
    inside = tf.reduce_all((xy >= 0.0) & (xy <= size - 1.0), axis=-1)
    v = tf.where(inside, kp_in[..., 2], tf.zeros_like(kp_in[..., 2]))
    out["keypoints"] = tf.concat([xy, v[..., None]], axis=-1)
    out["num_people"] = t["num_people"]
    if aug.mask_factor is not None and aug.make_person_masks:
        out["person_masks"] = person_masks(out["instance_map"], tf.shape(kp)[0],
                                           aug.mask_factor // grid)
    out["matrix"] = matrix
    out["flipped"] = flip
    return out


def person_masks(instance_map: tf.Tensor, num_rows: Any, factor: int = 1) -> tf.Tensor:
    """(P, hm, wm) uint8 masks ``instance_map[::f, ::f] == j + 1`` for j < ``num_rows``."""
    sub = instance_map[::factor, ::factor]
    ids = tf.range(1, tf.cast(num_rows, tf.int32) + 1, dtype=sub.dtype)
    return tf.cast(tf.equal(sub[None], ids[:, None, None]), tf.uint8)


def crop_transform(matrix: Any, original_width: int, original_height: int
                   ) -> geometry.ImageTransform:
    """The :class:`geometry.ImageTransform` of an identity-mode matrix (no rotation, no
    flip): ``input = original * scale + offset``. Raises ValueError for other matrices."""
    m = [[float(v) for v in row] for row in (matrix.numpy() if hasattr(matrix, "numpy") else matrix)]
    if abs(m[0][1]) > 1e-6 or abs(m[1][0]) > 1e-6 or m[0][0] <= 0 or abs(m[0][0] - m[1][1]) > 1e-6:
        raise ValueError("augment: crop_transform needs a matrix with no rotation or flip")
    return geometry.ImageTransform(scale=m[0][0], offset_x=m[0][2], offset_y=m[1][2],
                                   original_width=int(original_width),
                                   original_height=int(original_height))
