"""One dataclass config for the whole method: YAML presets and ``key=value`` overrides.

Every constant of the method lives here, once. Modules take what they need from a
:class:`Config` (or one of its sections); none keeps its own copy.

    cfg = load_config("strongpose", ["model.output_stride=16", "train.batch_size=4"])

A preset is a YAML file in ``strongpose/configs/`` (``personlab``, ``strongpose``,
``tiny``) or any YAML path. Unknown keys and bad values (a float that is NaN or
infinite included) stop with a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import yaml

from strongpose.backbones import BACKBONES  # the names of resnet_v2's SPECS; no Keras import
from strongpose.skeleton import Skeleton, SkeletonError

PRESET_DIR = Path(__file__).resolve().parent / "configs"


MIXED_DTYPES: tuple[str, ...] = ("float16", "bfloat16")   # train.mixed_dtype


class ConfigError(ValueError):
    """A config key that does not exist or a value that is not allowed."""


# ---------------------------------------------------------------------- sections
@dataclass
class ModelConfig:
    """Network: backbone, output stride, heads and in-network refinement."""

    backbone: str = "resnet101"
    output_stride: int = 8            # stride of the maps during training
    eval_output_stride: Optional[int] = None  # at evaluation; None: same as output_stride
    input_size: int = 401             # training crop, s*n + 1
    weights: Optional[str] = None     # "imagenet", a .weights.h5 file, or a TF-slim .ckpt
    freeze_batchnorm: bool = False
    intermediate_supervision: bool = True
    mid_refine_steps: int = 2         # M' = M + S(p + M), this many times
    long_refine_steps: int = 1        # long-range: refine by itself, then by short, this many times
    head_channels: int = 0            # 0: 1x1 heads on backbone features; >0: a 3x3 conv of that width first


@dataclass
class CodecConfig:
    """Map geometry shared by targets (encode) and post_proc (decode)."""

    disk_radius: float = 32.0         # R: keypoint disk radius, input-image pixels
    limb_radius: float = 8.0          # half-thickness of limbs drawn as body for people without a mask
    max_people: int = 32              # P_max: people padded per image


@dataclass
class LossConfig:
    """Loss weights and options."""

    heatmap: float = 4.0
    body: float = 2.0
    short: float = 1.0
    mid: float = 0.25
    long: float = 0.125
    intermediate: float = 1.0         # factor on the intermediate heat + short losses


@dataclass
class DecoderConfig:
    """Post-processing: maps to people."""

    peak_threshold: float = 0.01      # on Hough maps (votes / pi R^2)
    nms_radius: float = 10.0          # r: same keypoint type within r of a found person -> not a new seed
    snap_steps: int = 2               # short-offset snaps after each mid-range step
    keypoint_threshold: float = 0.0   # keypoints scoring below are still reported, with their score
    max_people: int = 30              # at most this many people per image (seeding stops there)
    max_candidates_per_type: int = 100  # best peaks kept per keypoint type (bounds the work on any maps)
    max_candidates: int = 1000        # best peaks kept over all types
    min_person_score: float = 0.0     # drop people scoring below
    use_long_range: bool = True       # merge fragments of one person with long-range offsets
    body_threshold: float = 0.5       # BHM probability that counts as body
    mask_threshold: float = 1.0       # embedding distance / person scale below which a pixel joins
    instance_masks: bool = True
    unchecked_vote_weight: float = 0.5  # long-range vote landing off the body (uncheckable), vs a checked one


@dataclass
class DataConfig:
    """COCO data and augmentation."""

    coco_root: str = "coco2017"
    train_split: str = "train2017"
    val_split: str = "val2017"
    annotation_pattern: str = "annotations/person_keypoints_{split}.json"
    tfrecord_dir: Optional[str] = None
    scale_range: tuple[float, float] = (0.7, 1.3)
    rotation_deg: float = 25.0
    flip_probability: float = 0.5
    shuffle_buffer: int = 1024


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    batch_size: int = 8               # global batch
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    steps: int = 100_000
    warmup_steps: int = 1000
    polyak_decay: float = 0.0         # 0: off; else EMA decay of weights
    mixed_precision: bool = False
    mixed_dtype: str = "float16"      # with mixed_precision: float16 (loss scaling; GPUs) or bfloat16 (CPUs with AMX)
    sync_batchnorm: bool = False      # TF replicas: batch-norm statistics over the global batch
    log_every: int = 100
    checkpoint_every: int = 5000
    eval_every: int = 5000            # steps between validation AP runs (0: only at the end)
    eval_images: int = 500            # first N images of data.val_split scored (0: no validation)
    tensorboard: bool = True          # scalars every log_every steps, images at each evaluation
    keep_checkpoints: int = 2         # newest checkpoints kept in <output_dir>/checkpoints
    output_dir: str = "runs/default"


@dataclass
class Config:
    """The whole configuration."""

    skeleton: Skeleton = field(default_factory=Skeleton)
    model: ModelConfig = field(default_factory=ModelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def eval_output_stride(self) -> int:
        """Output stride at evaluation time."""
        return self.model.eval_output_stride or self.model.output_stride

    def to_dict(self) -> dict[str, Any]:
        """A YAML-friendly mapping that :func:`from_dict` reads back."""
        out: dict[str, Any] = {"skeleton": self.skeleton.to_dict()}
        for f in dataclasses.fields(self):
            if f.name != "skeleton":
                out[f.name] = _plain(dataclasses.asdict(getattr(self, f.name)))
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# -------------------------------------------------------------------- validation
def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _check_finite(value: Any, key: str) -> None:
    """Every float in ``value`` (a float, or a tuple/list of them) is finite: no NaN, no +-inf."""
    if isinstance(value, float):
        _check(math.isfinite(value), key, f"{value} is not a finite number")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express.

    First, generically: every float value of every section (and the skeleton's sigmas) must
    be finite (YAML reads ``.inf`` and ``.nan`` as floats). Then each key's own range.
    """
    for section in dataclasses.fields(cfg):
        if section.name == "skeleton":
            _check_finite(cfg.skeleton.sigmas, "skeleton.sigmas")
            continue
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values):
            _check_finite(getattr(values, f.name), f"{section.name}.{f.name}")
    m, c, l, d, t, data = cfg.model, cfg.codec, cfg.loss, cfg.decoder, cfg.train, cfg.data
    _check(m.backbone in BACKBONES, "model.backbone", f"{m.backbone!r} is not one of {BACKBONES}")
    for key, s in (("model.output_stride", m.output_stride),
                   ("model.eval_output_stride", m.eval_output_stride)):
        _check(s is None or s in (8, 16, 32), key, f"{s} is not 8, 16 or 32")
    for s in {m.output_stride, cfg.eval_output_stride}:
        _check(m.input_size > s and (m.input_size - 1) % s == 0, "model.input_size",
               f"{m.input_size} is not s*n + 1 for output stride {s} (e.g. 401 = 8*50 + 1)")
    _check(m.mid_refine_steps >= 0, "model.mid_refine_steps", "must be >= 0")
    _check(m.long_refine_steps >= 0, "model.long_refine_steps", "must be >= 0")
    _check(m.head_channels >= 0, "model.head_channels", "must be >= 0")
    _check(c.disk_radius > 0, "codec.disk_radius", "must be > 0")
    _check(c.limb_radius > 0, "codec.limb_radius", "must be > 0")
    _check(c.max_people >= 1, "codec.max_people", "must be >= 1")
    for f in dataclasses.fields(l):
        _check(getattr(l, f.name) >= 0, f"loss.{f.name}", "a loss weight must be >= 0")
    _check(d.peak_threshold >= 0, "decoder.peak_threshold", "must be >= 0")
    _check(d.nms_radius > 0, "decoder.nms_radius", "must be > 0")
    _check(d.snap_steps >= 0, "decoder.snap_steps", "must be >= 0")
    _check(d.max_people >= 1, "decoder.max_people", "must be >= 1")
    _check(d.max_candidates_per_type >= 1, "decoder.max_candidates_per_type", "must be >= 1")
    _check(d.max_candidates >= 1, "decoder.max_candidates", "must be >= 1")
    _check(0 <= d.body_threshold <= 1, "decoder.body_threshold", "must be in [0, 1]")
    _check(d.mask_threshold > 0, "decoder.mask_threshold", "must be > 0")
    _check(0 <= d.unchecked_vote_weight <= 1, "decoder.unchecked_vote_weight", "must be in [0, 1]")
    lo, hi = data.scale_range
    _check(0 < lo <= hi, "data.scale_range", f"({lo}, {hi}) needs 0 < low <= high")
    _check(0 <= data.flip_probability <= 1, "data.flip_probability", "must be in [0, 1]")
    _check(data.rotation_deg >= 0, "data.rotation_deg", "must be >= 0")
    _check(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _check(t.learning_rate > 0, "train.learning_rate", "must be > 0")
    _check(t.mixed_dtype in MIXED_DTYPES, "train.mixed_dtype", f"{t.mixed_dtype!r} is not one of {MIXED_DTYPES}")
    _check(t.steps >= 1, "train.steps", "must be >= 1")
    _check(0 <= t.polyak_decay < 1, "train.polyak_decay", "must be in [0, 1)")
    _check(t.eval_every >= 0, "train.eval_every", "must be >= 0")
    _check(t.eval_images >= 0, "train.eval_images", "must be >= 0")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")


# ------------------------------------------------------------------ construction
def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise ConfigError(f"{key}: a {len(str(value))}-digit integer is not a finite float") from None
        _check_finite(value, key)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover


def _section_from_dict(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a nested mapping."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    sections = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(sections)})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name == "skeleton":
            try:
                kwargs[name] = Skeleton.from_dict(value or {})
            except (SkeletonError, TypeError) as exc:
                raise ConfigError(str(exc)) from exc
        else:
            cls = typing.get_type_hints(Config)[name]
            kwargs[name] = _section_from_dict(cls, value or {}, name)
    return Config(**kwargs)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["model.output_stride=16", ...]`` -> nested mapping (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{item}: an override must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{key}: an override key must look like section.key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from exc
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: conflicts with another override")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "skeleton":
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml(name_or_path: str | Path) -> dict[str, Any]:
    """Read a preset by name, or a YAML file by path, with the safe loader."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"config: no preset {str(name_or_path)!r} (presets: {', '.join(preset_names())})")
    if not path.is_file():
        raise ConfigError(f"config: file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping at the top level")
    return data


def load_config(name_or_path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then a preset or YAML file, then ``key=value`` overrides; validated."""
    data: dict[str, Any] = {}
    if name_or_path is not None:
        data = read_yaml(name_or_path)
    data = _merge(data, parse_overrides(overrides))
    return from_dict(data)
