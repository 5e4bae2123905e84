"""Keypoint sets: names, kinematic tree, flip pairs and OKS sigmas.

A :class:`Skeleton` is a plain value carried by the config. COCO's 17-point
skeleton is the default; nothing else in the package hard-codes it, so a user's
own keypoint set works by configuration alone (see :meth:`Skeleton.from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# The 16 undirected edges of PersonLab's kinematic tree (COCO indices).
COCO_TREE_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 7), (7, 9),
    (6, 8), (8, 10), (5, 11), (6, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)

COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)

# Per-keypoint OKS sigmas from pycocotools' COCOeval.
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)


class SkeletonError(ValueError):
    """A keypoint set that cannot be used (bad tree, flip pairs or sigmas)."""


@dataclass(frozen=True)
class Skeleton:
    """A keypoint set and its kinematic tree.

    Attributes:
        names: keypoint names, in the order of the heat-map channels.
        edges: undirected tree edges ``(a, b)`` as keypoint indices; they must
            form one tree spanning every keypoint.
        flip_pairs: left/right pairs swapped by a horizontal flip.
        sigmas: per-keypoint OKS sigmas (used by COCOeval and the decoder).
    """

    names: tuple[str, ...] = COCO_KEYPOINT_NAMES
    edges: tuple[tuple[int, int], ...] = COCO_TREE_EDGES
    flip_pairs: tuple[tuple[int, int], ...] = COCO_FLIP_PAIRS
    sigmas: tuple[float, ...] = COCO_OKS_SIGMAS

    def __post_init__(self) -> None:
        # Normalise lists (from YAML) to tuples so the value stays hashable.
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "edges", tuple((int(a), int(b)) for a, b in self.edges))
        object.__setattr__(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        object.__setattr__(self, "sigmas", tuple(float(s) for s in self.sigmas))
        self._validate()

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        k = len(self.names)
        if k < 1:
            raise SkeletonError("skeleton.names: at least one keypoint is needed")
        if len(set(self.names)) != k:
            raise SkeletonError(f"skeleton.names: duplicate keypoint names in {list(self.names)}")
        if len(self.sigmas) != k:
            raise SkeletonError(
                f"skeleton.sigmas: {len(self.sigmas)} sigmas for {k} keypoints")
        if any(s <= 0 for s in self.sigmas):
            raise SkeletonError("skeleton.sigmas: every OKS sigma must be > 0")
        for a, b in self.edges:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise SkeletonError(
                    f"skeleton.edges: edge ({a}, {b}) is not a pair of distinct keypoints in 0..{k - 1}")
        if len(self.edges) != k - 1 or not _is_connected(k, self.edges):
            raise SkeletonError(
                f"skeleton.edges: the {len(self.edges)} edges do not form one tree over the {k} "
                f"keypoints (a tree needs exactly {k - 1} edges connecting every keypoint)")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k) or a == b or a in seen or b in seen:
                raise SkeletonError(
                    f"skeleton.flip_pairs: pair ({a}, {b}) is invalid or reuses a keypoint")
            seen.update((a, b))

    # -------------------------------------------------------------- derived
    @property
    def num_keypoints(self) -> int:
        """K: the number of keypoint types."""
        return len(self.names)

    @property
    def num_edges(self) -> int:
        """E: the number of undirected tree edges."""
        return len(self.edges)

    @property
    def directed_edges(self) -> tuple[tuple[int, int], ...]:
        """The E tree edges forward, then the same E edges reversed (2E in all)."""
        return self.edges + tuple((b, a) for a, b in self.edges)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """Index map: keypoint ``i`` of a flipped image is keypoint ``perm[i]``."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    @property
    def directed_edge_flip_permutation(self) -> tuple[int, ...]:
        """Index map for directed-edge channels under a horizontal flip."""
        perm = self.flip_permutation
        index = {e: i for i, e in enumerate(self.directed_edges)}
        try:
            return tuple(index[(perm[a], perm[b])] for a, b in self.directed_edges)
        except KeyError as exc:
            raise SkeletonError(
                "skeleton.flip_pairs: flipping does not map the tree onto itself") from exc

    @property
    def sigmas_array(self) -> np.ndarray:
        """OKS sigmas as a float32 array of shape (K,)."""
        return np.asarray(self.sigmas, dtype=np.float32)

    # ------------------------------------------------------------ (de)serialise
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Skeleton":
        """Build from a mapping with keys names, edges, flip_pairs, sigmas.

        ``edges`` and ``flip_pairs`` may name keypoints by index or by name.
        """
        unknown = set(data) - {"names", "edges", "flip_pairs", "sigmas"}
        if unknown:
            raise SkeletonError(f"skeleton: unknown keys {sorted(unknown)}")
        names = tuple(data.get("names", COCO_KEYPOINT_NAMES))
        lookup = {n: i for i, n in enumerate(names)}

        def idx(v: Any, where: str) -> int:
            if isinstance(v, str):
                if v not in lookup:
                    raise SkeletonError(f"skeleton.{where}: unknown keypoint name {v!r}")
                return lookup[v]
            return int(v)

        def pairs(key: str, default: Sequence) -> tuple[tuple[int, int], ...]:
            out = []
            for p in data.get(key, default):
                if len(p) != 2:
                    raise SkeletonError(f"skeleton.{key}: {p!r} is not a pair")
                out.append((idx(p[0], key), idx(p[1], key)))
            return tuple(out)

        custom = "names" in data
        if custom and "sigmas" not in data:
            raise SkeletonError("skeleton.sigmas: a custom keypoint set needs its OKS sigmas")
        return cls(
            names=names,
            edges=pairs("edges", () if custom else COCO_TREE_EDGES),
            flip_pairs=pairs("flip_pairs", () if custom else COCO_FLIP_PAIRS),
            sigmas=tuple(data.get("sigmas", COCO_OKS_SIGMAS)),
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping (YAML friendly) that :meth:`from_dict` reads back."""
        return {
            "names": list(self.names),
            "edges": [list(e) for e in self.edges],
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "sigmas": list(self.sigmas),
        }


def _is_connected(k: int, edges: Sequence[tuple[int, int]]) -> bool:
    parent = list(range(k))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[find(a)] = find(b)
    return len({find(i) for i in range(k)}) == 1


COCO_SKELETON = Skeleton()
