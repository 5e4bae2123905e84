"""The map table: every map of the contract in docs/MAPS.md, once.

Targets (``strongpose.targets``), the network (``strongpose.model``), the losses
(``strongpose.losses``), flips (``strongpose.flip``) and the decoder read their keys,
channel counts, loss kind and flip behaviour from :data:`MAPS`. Adding a map means a row
here, its encoder in ``targets.py``, its use in decoding, and docs/MAPS.md.

No TensorFlow or Keras here: the NumPy decoder imports this module.

Keys of one map ``spec``:

- ``spec.key``: the target (and decoder) map, probabilities for ``logits`` maps;
- ``spec.weight_key``: its loss weight, one channel per item (offsets share it for dx, dy);
- ``spec.output_key``: the network output (``<key>_logits`` for ``logits`` maps);
- ``intermediate_output_key(key)``: ``inter_<output_key>`` for the maps in
  :data:`INTERMEDIATE`, heads on the backbone's middle features (training only).

Kinds (how many channels, and how a horizontal flip moves them):

- ``keypoint``: K channels, one per keypoint type (permuted);
- ``keypoint_offset``: 2K channels, (dx, dy) per keypoint type (permuted, dx negated);
- ``edge_offset``: 2*2E channels, (dx, dy) per directed edge (permuted, dx negated);
- ``plain``: 1 channel that does not depend on left/right (mirrored only).

An offset map's weight has the kind without ``_offset`` (``keypoint``, or ``edge``: 2E
channels, one per directed edge), as :func:`flip_kind` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from strongpose.skeleton import Skeleton

KINDS: tuple[str, ...] = ("keypoint", "keypoint_offset", "edge_offset", "plain")
LOSSES: tuple[str, ...] = ("sigmoid_ce", "offset_l1")
_OFFSET = "_offset"
_INTER = "inter_"


@dataclass(frozen=True)
class MapSpec:
    """One map: its key, channel layout, loss and meaning."""

    key: str        # target/decoder key
    kind: str       # one of KINDS
    logits: bool    # network emits logits under output_key; targets, decoder: probabilities
    loss: str       # one of LOSSES
    holds: str      # one line: what the map holds

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"MapSpec {self.key!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.loss not in LOSSES:
            raise ValueError(f"MapSpec {self.key!r}: loss {self.loss!r} is not one of {LOSSES}")

    def weight_channels(self, skeleton: "Skeleton") -> int:
        """Channels of the weight: one per item (keypoint type, directed edge, or 1)."""
        if self.kind.startswith("keypoint"):
            return skeleton.num_keypoints
        if self.kind.startswith("edge"):
            return len(skeleton.directed_edges)
        return 1

    def channels(self, skeleton: "Skeleton") -> int:
        """Channels of the map (and of its network output): 2 per item for offsets."""
        n = self.weight_channels(skeleton)
        return 2 * n if self.kind.endswith(_OFFSET) else n

    @property
    def output_key(self) -> str:
        """The network output's key: ``<key>_logits`` for logits maps, else ``key``."""
        return f"{self.key}_logits" if self.logits else self.key

    @property
    def weight_key(self) -> str:
        """The loss weight's key: ``<key>_weight``."""
        return f"{self.key}_weight"


MAPS: tuple[MapSpec, ...] = (
    MapSpec("heatmap", "keypoint", logits=True, loss="sigmoid_ce",
            holds="1 within disk_radius of a labelled keypoint of type k, else 0"),
    MapSpec("short", "keypoint_offset", logits=False, loss="offset_l1",
            holds="at disk cells of type k: (dx, dy) to the nearest keypoint of type k"),
    MapSpec("mid", "edge_offset", logits=False, loss="offset_l1",
            holds="at a's disk of directed edge (a, b): (dx, dy) to the same person's b"),
    MapSpec("long", "keypoint_offset", logits=False, loss="offset_l1",
            holds="in the body of exactly one person: (dx, dy) to that person's keypoint k"),
    MapSpec("body", "plain", logits=True, loss="sigmoid_ce",
            holds="1 on body cells (person masks, or limbs drawn from keypoints), else 0"),
)
SPECS: dict[str, MapSpec] = {spec.key: spec for spec in MAPS}
MAP_KEYS: tuple[str, ...] = tuple(spec.key for spec in MAPS)
WEIGHT_KEYS: tuple[str, ...] = tuple(spec.weight_key for spec in MAPS)
OUTPUT_KEYS: tuple[str, ...] = tuple(spec.output_key for spec in MAPS)
INTERMEDIATE: tuple[str, ...] = ("heatmap", "short")


def intermediate_output_key(key: str) -> str:
    """``inter_<output_key>`` of a map with an intermediate head (``key`` in INTERMEDIATE)."""
    if key not in INTERMEDIATE:
        raise ValueError(f"map {key!r} has no intermediate head "
                         f"(those that do: {list(INTERMEDIATE)})")
    return _INTER + SPECS[key].output_key


# Every key any stage uses -> (its map, and whether it is the map's weight).
_ANY_KEY: dict[str, tuple[MapSpec, bool]] = {}
for _spec in MAPS:
    _ANY_KEY[_spec.key] = (_spec, False)
    _ANY_KEY[_spec.output_key] = (_spec, False)
    _ANY_KEY[_spec.weight_key] = (_spec, True)
for _key in INTERMEDIATE:
    _ANY_KEY[intermediate_output_key(_key)] = (SPECS[_key], False)
del _spec, _key


def _lookup(any_key: str) -> tuple[MapSpec, bool]:
    try:
        return _ANY_KEY[any_key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown map key {any_key!r} (known: {sorted(_ANY_KEY)})") from None


def flip_kind(any_key: str) -> str:
    """How a flip moves the channels of a target, weight, output or intermediate output.

    ``keypoint``, ``keypoint_offset``, ``edge``, ``edge_offset`` or ``plain`` (see the
    module docstring); ValueError listing the known keys for any other key.
    """
    spec, weight = _lookup(any_key)
    return spec.kind.removesuffix(_OFFSET) if weight else spec.kind


def _expected_channels(any_key: str, skeleton: "Skeleton") -> int:
    spec, weight = _lookup(any_key)
    return spec.weight_channels(skeleton) if weight else spec.channels(skeleton)


def check_channels(maps: Mapping[str, Any], keys: Iterable[str], skeleton: "Skeleton",
                   where: str) -> None:
    """Check ``maps[key]``'s last axis for each of ``keys`` (any key :func:`flip_kind` knows).

    Raises a ValueError starting with ``where``: for keys missing from ``maps``, and
    naming the map, the expected and the actual channel count (for the skeleton's K and
    E) for a map whose last axis disagrees. An unknown last axis (or rank) passes.
    """
    keys = list(keys)
    missing = [key for key in keys if key not in maps]
    if missing:
        raise ValueError(f"{where}: maps lack {missing} (have {sorted(maps)})")
    for key in keys:
        want = _expected_channels(key, skeleton)
        shape = getattr(maps[key], "shape", None)
        try:
            shape = tuple(np.shape(maps[key]) if shape is None else shape)
        except (TypeError, ValueError):  # unknown rank (a traced TensorShape(None))
            continue
        if not shape:
            raise ValueError(f"{where}: {key!r} has no channel axis (shape ()), "
                             f"expected {want} channels")
        got = shape[-1]
        if got is not None and int(got) != want:
            raise ValueError(f"{where}: {key!r} has {int(got)} channels, expected {want} "
                             f"(K={skeleton.num_keypoints}, E={skeleton.num_edges})")
