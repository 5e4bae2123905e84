"""Images -> people with a trained network: load, resize/pad, flip and multi-scale, decode.

    from strongpose.predictor import Predictor
    predictor = Predictor.load("runs/tiny")              # training folder, .weights.h5, .keras, SavedModel
    people = predictor("photo.jpg")                      # list of post_proc.Person, original pixels
    for result in predictor.predict(paths, batch_size=4):    # batches of one size; decoding of
        result.people, result.source                         # one batch overlaps the next's network

Each image is resized so that its longer side is ``input_size`` (default
``cfg.model.input_size``) times each scale, padded right and bottom to ``s*n + 1``, and run
through the network; with ``flip`` the mirrored input runs too and its maps are mirrored
back (:func:`strongpose.flip.flip_map`: columns reversed, left/right channels swapped, dx
negated). Maps are averaged as probabilities (sigmoid first) and offsets; the maps of other
scales are resampled onto the first scale's grid, their offsets rescaled to its pixels
(:func:`merge_scales`). The decoder (``post_proc.Decoder``) returns people in original
image pixels through the :class:`strongpose.geometry.ImageTransform` of the first scale.
An image larger than ``max_side`` (4096) is downscaled on reading; its people's keypoints
and boxes are moved back to the file's pixels, its masks stay at the downscaled size
(:class:`Prediction`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np

from strongpose import geometry, maps as map_table
from strongpose.config import Config, load_config
from strongpose.flip import flip_map
from strongpose.images import ImageError, ImageSource, describe, load as load_rgb
from strongpose.post_proc import Decoder, Person
from strongpose.post_proc.inputs import outputs_to_maps, required_keys

CONFIG_FILE = "config.yaml"
WEIGHTS_FILES = {"final": "model.weights.h5", "best": "best.weights.h5"}
SAVED_MODEL_FILE = "saved_model.pb"
MAX_SIDE = 4096                # longer side above which an image is downscaled on reading
DECODER_KEYS: tuple[str, ...] = tuple(spec.key for spec in map_table.MAPS)

# A network: a batch (B, H, W, 3) float32 RGB 0..255 -> {output key: (B, h, w, C)} arrays.
Network = Callable[[np.ndarray], Mapping[str, Any]]


# ----------------------------------------------------------------------- resizing
def fit_transform(height: int, width: int, long_side: int, stride: int) -> tuple[geometry.ImageTransform, tuple[int, int], tuple[int, int]]:
    """How an image of ``(height, width)`` becomes an input whose longer side is ``long_side``.

    Align-corners, as training's evaluation crop (``augment`` in identity mode): pixel
    ``x`` goes to ``f*x`` with ``f = (long_side - 1) / (longer side - 1)``, so the first
    and last pixels stay on the input's first and last. Returns ``(transform, resized
    (h, w), padded (H, W))``; the padded size is ``s*n + 1``, padding right and bottom.
    """
    f = float(long_side - 1) / max(height - 1, width - 1, 1)
    rh, rw = int(round((height - 1) * f)) + 1, int(round((width - 1) * f)) + 1
    t = geometry.ImageTransform(scale=f, original_width=int(width), original_height=int(height))
    return t, (rh, rw), (geometry.padded_size(rh, stride), geometry.padded_size(rw, stride))


def prepare(image: np.ndarray, long_side: int, stride: int) -> tuple[np.ndarray, geometry.ImageTransform]:
    """RGB uint8 image -> (network input float32 ``(H, W, 3)`` padded with 0, its transform).

    Bilinear, align-corners (:func:`fit_transform`). Shrinking by more than 2 first
    averages ``k x k`` blocks (``k = floor(1/f)``, OpenCV's area resize: block ``i``'s
    centre is pixel ``k*i + (k-1)/2``) so that fine detail does not alias; the transform
    then carries that half-block offset, ``-f*(k-1)/2``.
    """
    h, w = image.shape[:2]
    t, _, (ph, pw) = fit_transform(h, w, long_side, stride)
    src, k = np.asarray(image), 1
    if t.scale < 0.5:
        k = int(1 / t.scale)
        src = cv2.resize(src, (0, 0), fx=1 / k, fy=1 / k, interpolation=cv2.INTER_AREA)
        off = -t.scale * (k - 1) / 2
        t = dataclasses.replace(t, offset_x=off, offset_y=off)
    g = t.scale * k
    m = np.float32([[g, 0, 0], [0, g, 0]])
    out = cv2.warpAffine(src.astype(np.float32), m, (pw, ph), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(ph, pw, -1), t


def shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` downscaled (area) so its longer side is at most ``max_side``; (image, factor)."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0
    f = max_side / max(h, w)
    size = (max(2, int(round(w * f))), max(2, int(round(h * f))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / w


def rescale_people(people: Sequence[Person], from_size: tuple[int, int],
                   to_size: tuple[int, int]) -> list[Person]:
    """People's keypoints and boxes moved from an image of ``from_size`` (H, W) to the same
    image resized to ``to_size`` (masks unchanged).

    Pixel centres map as in an area/bilinear resize (OpenCV's convention, each axis with its
    own factor): ``x' = (x + 0.5) * W'/W - 0.5``; a box's corner moves like a point and its
    size scales. The people are new objects; the inputs are not changed.
    """
    if tuple(from_size) == tuple(to_size):
        return list(people)
    fy, fx = to_size[0] / from_size[0], to_size[1] / from_size[1]
    factor = np.array([fx, fy], np.float32)
    out = []
    for p in people:
        kps = np.array(p.keypoints, np.float32, copy=True)
        kps[:, :2] = (kps[:, :2] + 0.5) * factor - 0.5
        kps[:, :2] = np.clip(kps[:, :2], 0, np.array([to_size[1] - 1, to_size[0] - 1], np.float32))
        x, y, bw, bh = p.box
        box = (float((x + 0.5) * fx - 0.5), float((y + 0.5) * fy - 0.5), float(bw * fx), float(bh * fy))
        out.append(dataclasses.replace(p, keypoints=kps, box=box))
    return out


def full_size_mask(mask: Optional[np.ndarray], size: tuple[int, int]) -> Optional[np.ndarray]:
    """A person's bool mask resized (nearest) to ``size`` (H, W): a downscaled image's mask
    in the original's pixels (see :class:`Prediction`); None stays None."""
    if mask is None or tuple(mask.shape[:2]) == tuple(size):
        return mask
    up = cv2.resize(np.ascontiguousarray(mask, np.uint8), (int(size[1]), int(size[0])),
                    interpolation=cv2.INTER_NEAREST)
    return up.astype(bool)


# ----------------------------------------------------------------------- merging
def _axis_weights(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.clip(coords, 0, size - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, size - 1)
    return i0, i1, (c - i0).astype(np.float32)


def resample_map(arr: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear read of ``arr (h, w, C)`` at cell rows ``ys`` and columns ``xs`` (separable,
    clamped at the border): ``(len(ys), len(xs), C)``."""
    y0, y1, fy = _axis_weights(ys, arr.shape[0])
    x0, x1, fx = _axis_weights(xs, arr.shape[1])
    rows = arr[y0] * (1 - fy)[:, None, None] + arr[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def merge_scales(per_scale: Sequence[Mapping[str, np.ndarray]],
                 transforms: Sequence[geometry.ImageTransform], stride: int) -> dict[str, np.ndarray]:
    """Average one image's maps from several scales on the first scale's grid.

    Cell ``(i, j)`` of the reference map is original point ``t0.to_original((s*j, s*i))``;
    scale ``k``'s maps are read bilinearly at that point's cell in their grid, and their
    offsets (input pixels of scale k) multiplied by ``t0.scale / tk.scale``.
    """
    ref, t0 = per_scale[0], transforms[0]
    h, w = next(iter(ref.values())).shape[:2]
    out = {key: arr.astype(np.float32, copy=True) for key, arr in ref.items()}
    for maps_k, tk in zip(per_scale[1:], transforms[1:]):
        ratio = tk.scale / t0.scale
        xs = ((np.arange(w) * stride - t0.offset_x) * ratio + tk.offset_x) / stride
        ys = ((np.arange(h) * stride - t0.offset_y) * ratio + tk.offset_y) / stride
        for key, arr in maps_k.items():
            value = resample_map(arr, ys, xs)
            if map_table.SPECS[key].kind.endswith("_offset"):
                value = value / np.float32(ratio)
            out[key] += value
    n = np.float32(len(per_scale))
    return {key: arr / n for key, arr in out.items()}


def unflip_average(maps: Mapping[str, np.ndarray], flipped: Mapping[str, np.ndarray],
                   skeleton) -> dict[str, np.ndarray]:
    """Mean of one image's maps and the maps of its mirrored input, mirrored back."""
    return {key: 0.5 * (maps[key] + flip_map(key, flipped[key], skeleton)) for key in maps}


# ----------------------------------------------------------------------- loading
def config_beside(source: str | os.PathLike) -> Path | None:
    """``config.yaml`` in a training/export folder or beside a weights file; None if absent."""
    path = Path(source)
    candidate = (path if path.is_dir() else path.parent) / CONFIG_FILE
    return candidate if candidate.is_file() else None


def resolve_config(source: str | os.PathLike, config: str | os.PathLike | None = None,
                   overrides: Sequence[str] = ()) -> Config:
    """The config of a model: ``config`` (preset or YAML) if given, else the ``config.yaml``
    beside ``source``; then ``overrides`` (``section.key=value``)."""
    found = config if config is not None else config_beside(source)
    if found is None:
        raise ValueError(f"{source}: no {CONFIG_FILE} beside it; pass the config it was "
                         f"trained with (--config NAME_OR_YAML)")
    return load_config(found, list(overrides))


def _config_beside(path: Path, cfg: Config | None) -> Config:
    return cfg if cfg is not None else resolve_config(path)


def find_weights(folder: Path, checkpoint: str = "final") -> Path:
    """The weights file of a training output folder: ``model.weights.h5`` (final, EMA weights
    when EMA was on) or ``best.weights.h5``; the other one when the asked one is absent."""
    if checkpoint not in WEIGHTS_FILES:
        raise ValueError(f"checkpoint must be one of {sorted(WEIGHTS_FILES)}, got {checkpoint!r}")
    order = [WEIGHTS_FILES[checkpoint]] + [f for f in WEIGHTS_FILES.values() if f != WEIGHTS_FILES[checkpoint]]
    for name in order:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {' or '.join(order)} (has training finished? "
                            f"`python train.py --config tiny --data synth --train-split train {folder}` writes one)")


def keras_network(model) -> Network:
    """A Keras model (dict outputs) as a :data:`Network`: one traced function for any size."""
    return _traced_network(lambda: model)


def _traced_network(get_model: Callable[[], Any]) -> Network:
    import tensorflow as tf

    keys = [k for k in map_table.OUTPUT_KEYS]
    fn = tf.function(lambda x: {k: v for k, v in get_model()(x, training=False).items() if k in keys},
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    return lambda images: {k: v.numpy() for k, v in fn(tf.convert_to_tensor(images, tf.float32)).items()}


_TRACED: "weakref.WeakKeyDictionary[Any, Network]" = weakref.WeakKeyDictionary()


def model_network(model: Any) -> Network:
    """A Keras model, or anything called as ``model(images, training=False)`` that returns
    the dict of maps, as a :data:`Network` on any backend. A Keras model on the TensorFlow
    backend goes through :func:`keras_network` (one traced function per model, kept while
    the model lives, holding it weakly: training's validation and ``evaluate.py`` run the
    same graph)."""
    import keras
    from keras import ops

    if isinstance(model, keras.Model) and keras.backend.backend() == "tensorflow":
        if model not in _TRACED:
            _TRACED[model] = _traced_network(weakref.ref(model))
        return _TRACED[model]
    keys = set(map_table.OUTPUT_KEYS)
    return lambda images: {k: ops.convert_to_numpy(v)
                           for k, v in model(images, training=False).items() if k in keys}


def saved_model_network(path: Path) -> Network:
    """An exported SavedModel's ``serving_default`` signature as a :data:`Network`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    arg = next(iter(fn.structured_input_signature[1]))

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        out = fn(**{arg: tf.convert_to_tensor(images, tf.float32)})
        return {k: v.numpy() for k, v in out.items() if k in map_table.OUTPUT_KEYS}

    run.keep_alive = loaded  # the functions live as long as the object
    return run


def load_keras_model(cfg: Config, weights: Path | None):
    """The inference network of ``cfg`` at the evaluation stride with ``weights`` loaded."""
    import keras
    from strongpose.model import build_model

    full = build_model(cfg, output_stride=cfg.eval_output_stride, training_outputs=True)
    if weights is not None:
        full.load_weights(str(weights))
    outputs = {k: full.get_layer(k).output for k in map_table.OUTPUT_KEYS}
    return keras.Model(full.input, outputs, name="strongpose_inference")


def load_network(source: str | os.PathLike, cfg: Config | None = None,
                 checkpoint: str = "final") -> tuple[Network, Config]:
    """A network and its config from a training folder, ``.weights.h5``, ``.keras`` or SavedModel."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file or folder")
    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return saved_model_network(path), _config_beside(path, cfg)
    if path.is_dir():
        cfg = _config_beside(path, cfg)
        return keras_network(load_keras_model(cfg, find_weights(path, checkpoint))), cfg
    if path.name.endswith(".weights.h5"):
        cfg = _config_beside(path, cfg)
        return keras_network(load_keras_model(cfg, path)), cfg
    if path.suffix == ".keras":
        import keras
        import strongpose.model  # noqa: F401  (registers the custom layers)
        model = keras.saving.load_model(str(path), compile=False)
        return keras_network(model), _config_beside(path, cfg)
    raise ValueError(f"{path}: not a training folder, .weights.h5, .keras file or SavedModel folder")


# ----------------------------------------------------------------------- predicting
@dataclass
class Prediction:
    """One image's result.

    Keypoints and boxes are in the input's own pixels (the file's, or the array's), always.
    An input whose longer side exceeds ``Predictor.max_side`` is downscaled on reading
    (``image`` is the downscaled picture, ``source_scale`` < 1 its factor) and the network
    runs on that; the people found are then moved back to the original pixels
    (:func:`rescale_people`), but their masks stay at ``image``'s size: a full-size mask of
    an 8000x6000 photo is 48 MB per person, which is what ``max_side`` bounds. Below
    ``max_side`` (every normal photo) the masks are at the original size too.
    :meth:`people_in_image` gives the people in ``image``'s pixels, for drawing on it.
    """

    source: str                                   # the input's name (path, or array shape)
    people: list[Person]                          # keypoints, boxes: original pixels
    image: np.ndarray                             # the RGB uint8 image the network saw (read, maybe downscaled)
    transform: geometry.ImageTransform            # ``image`` -> first scale's input
    size: tuple[int, int]                         # (H, W) of the input: the pixels of ``people``
    maps: Optional[dict[str, np.ndarray]] = None  # merged probability maps, when asked
    network_s: float = 0.0                        # this image's share of network time
    decode_s: float = 0.0

    @property
    def source_scale(self) -> float:
        """``image``'s width over the input's: < 1 where a huge input was downscaled."""
        return self.image.shape[1] / self.size[1]

    def people_in_image(self) -> list[Person]:
        """``people`` with keypoints and boxes in ``image``'s pixels (masks already are)."""
        return rescale_people(self.people, self.size, self.image.shape[:2])


@dataclass
class Timing:
    """Seconds spent, for images/s split between network and decoder."""

    images: int = 0
    network_s: float = 0.0
    decode_s: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> dict[str, float]:
        def rate(s: float) -> float:
            return round(self.images / s, 3) if s > 0 else 0.0
        return {"images": self.images, "images_per_s": rate(self.wall_s),
                "network_images_per_s": rate(self.network_s),
                "decoder_images_per_s": rate(self.decode_s),
                "network_s": round(self.network_s, 3), "decode_s": round(self.decode_s, 3),
                "wall_s": round(self.wall_s, 3)}


@dataclass
class _Batch:
    sources: list[str]
    images: list[np.ndarray]
    sizes: list[tuple[int, int]]                  # (H, W) of each input before any downscale
    inputs: list[list[np.ndarray]]                # per scale: (H, W, 3) inputs
    transforms: list[list[geometry.ImageTransform]]


class Predictor:
    """A network, its config and the test-time options; ``predictor(image)`` -> people.

    Args:
        network: batch of RGB float32 0..255 images (B, s*n+1, s*m+1, 3) -> the network's
            output dict (logits and offsets, ``strongpose.model``'s keys).
        cfg: the config (skeleton, strides, decoder options).
        input_size: longer side of the network input at scale 1 (default
            ``cfg.model.input_size``).
        scales: factors on ``input_size``; maps are merged onto the first one's grid.
        flip: also run the mirrored input and average.
        keep_maps: keep each image's merged maps in its :class:`Prediction` (for drawing).
        max_side: images with a longer side are downscaled to it on reading and run at
            that size; their people's keypoints and boxes still come back in the input's
            pixels, their masks at the downscaled size (bounded memory: a full-size mask
            of an 8000x6000 photo is 48 MB per person). See :class:`Prediction`.
        stride: the network's output stride (default ``cfg.eval_output_stride``; training's
            validation passes ``cfg.model.output_stride``, its network's).
    """

    def __init__(self, network: Network, cfg: Config, *, input_size: int | None = None,
                 scales: Sequence[float] = (1.0,), flip: bool = False,
                 keep_maps: bool = False, max_side: int = MAX_SIDE,
                 stride: int | None = None) -> None:
        if not scales or any(not 0 < float(s) <= 8 for s in scales):
            raise ValueError(f"scales must be a non-empty list of factors in (0, 8], got {list(scales)}")
        self.network = network
        self.cfg = cfg
        self.stride = int(stride or cfg.eval_output_stride)
        self.input_size = int(input_size or cfg.model.input_size)
        if self.input_size < self.stride + 1:
            raise ValueError(f"input_size {self.input_size} must be > output stride {self.stride}")
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.keep_maps = bool(keep_maps)
        self.max_side = int(max_side)
        self.decoder = Decoder.from_config(cfg, stride=self.stride)
        self.keys = tuple(dict.fromkeys(required_keys(cfg.decoder.use_long_range,
                                                      cfg.decoder.instance_masks)
                                        + (DECODER_KEYS if keep_maps else ())))
        self.timing = Timing()

    @classmethod
    def load(cls, source: str | os.PathLike, cfg: Config | None = None, *,
             checkpoint: str = "final", **options: Any) -> "Predictor":
        """Load a network (:func:`load_network`) and wrap it; ``options`` as the constructor's."""
        network, cfg = load_network(source, cfg, checkpoint)
        return cls(network, cfg, **options)

    @classmethod
    def from_config(cls, cfg: Config, **options: Any) -> "Predictor":
        """The network of ``cfg`` as built (``model.weights`` loaded, heads untrained)."""
        return cls(keras_network(load_keras_model(cfg, None)), cfg, **options)

    # -- one image
    def __call__(self, image: ImageSource, channel_order: str = "rgb") -> list[Person]:
        """People in one image (path or array), best first, in its pixels."""
        return next(self.predict([image], channel_order=channel_order)).people

    # -- many images
    def predict(self, images: Iterable[ImageSource], *, batch_size: int = 1,
                channel_order: str = "rgb", overlap: bool = True,
                on_error: Optional[Callable[[str, Exception], None]] = None) -> Iterator[Prediction]:
        """Predictions in input order; an item is a source or ``(name, source)``, the name
        used in messages and as ``Prediction.source``. Consecutive images with the same input size share a
        network batch (at most ``batch_size``); with ``overlap`` a thread decodes one batch
        while the network runs the next. A bad image raises :class:`ImageError`, or, with
        ``on_error``, is reported to it (name, error) and skipped."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pool = concurrent.futures.ThreadPoolExecutor(1) if overlap else None
        pending: Optional[concurrent.futures.Future] = None
        start = time.perf_counter()
        try:
            for batch in self._batches(images, batch_size, channel_order, on_error):
                maps, net_s = self._run_network(batch)
                if pending is not None:
                    yield from pending.result()
                if pool is None:
                    yield from self._decode(batch, maps, net_s)
                else:
                    pending = pool.submit(self._decode, batch, maps, net_s)
            if pending is not None:
                yield from pending.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            self.timing.wall_s += time.perf_counter() - start

    def _batches(self, images: Iterable[ImageSource], batch_size: int, channel_order: str,
                 on_error) -> Iterator[_Batch]:
        batch: Optional[_Batch] = None
        for item in images:
            name, source = item if isinstance(item, tuple) else (describe(item), item)
            try:
                rgb = load_rgb(source, channel_order, name)
            except (ImageError, OSError) as err:
                if on_error is None:
                    raise
                on_error(name, err)
                continue
            size = tuple(rgb.shape[:2])
            rgb, _ = shrink(rgb, self.max_side)
            inputs, transforms = [], []
            for s in self.scales:
                x, t = prepare(rgb, max(self.stride + 1, int(round(self.input_size * s))), self.stride)
                inputs.append(x)
                transforms.append(t)
            same = batch is not None and all(
                batch.inputs[k][0].shape == x.shape for k, x in enumerate(inputs))
            if batch is not None and (not same or len(batch.sources) >= batch_size):
                yield batch
                batch = None
            if batch is None:
                batch = _Batch([], [], [], [[] for _ in self.scales], [])
            batch.sources.append(name)
            batch.images.append(rgb)
            batch.sizes.append(size)
            for k, x in enumerate(inputs):
                batch.inputs[k].append(x)
            batch.transforms.append(transforms)
        if batch is not None:
            yield batch

    def _run_network(self, batch: _Batch) -> tuple[list[dict[str, np.ndarray]], float]:
        """Per scale: probability maps and offsets (B, h, w, C), flip merged in."""
        t0 = time.perf_counter()
        per_scale = []
        n = len(batch.sources)
        for xs in batch.inputs:
            x = np.stack(xs)
            if self.flip:
                x = np.concatenate([x, x[:, :, ::-1]], axis=0)
            out = self._check_outputs(self.network(x))
            m = outputs_to_maps(out, self.keys)
            if self.flip:
                m = {k: 0.5 * (v[:n] + flip_map(k, v[n:], self.cfg.skeleton)) for k, v in m.items()}
            per_scale.append(m)
        dt = time.perf_counter() - t0
        self.timing.network_s += dt
        return per_scale, dt

    @staticmethod
    def _check_outputs(out: Any) -> Mapping[str, Any]:
        if not isinstance(out, Mapping):
            raise ValueError(f"the network returned {type(out).__name__}, expected a dict of maps")
        return out

    def _decode(self, batch: _Batch, per_scale: list[dict[str, np.ndarray]],
                net_s: float) -> list[Prediction]:
        results = []
        n = len(batch.sources)
        for b in range(n):
            t0 = time.perf_counter()
            image_maps = [{k: v[b] for k, v in m.items()} for m in per_scale]
            ts = batch.transforms[b]
            merged = image_maps[0] if len(ts) == 1 else merge_scales(image_maps, ts, self.stride)
            people = rescale_people(self.decoder(merged, ts[0]), batch.images[b].shape[:2],
                                    batch.sizes[b])
            dt = time.perf_counter() - t0
            self.timing.decode_s += dt
            self.timing.images += 1
            results.append(Prediction(source=batch.sources[b], people=people, image=batch.images[b],
                                      transform=ts[0], size=batch.sizes[b],
                                      maps=merged if self.keep_maps else None,
                                      network_s=net_s / n, decode_s=dt))
        return results
