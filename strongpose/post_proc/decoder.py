"""Maps of one image -> people: the steps of docs/DECODER.md in order.

    decoder = Decoder.from_config(cfg)
    people = decoder(maps, transform)                       # one image's probability maps
    batch = decoder.decode_outputs(model(images), transforms)   # network outputs, per image
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from strongpose.config import DecoderConfig
from strongpose.geometry import ImageTransform
from strongpose.skeleton import Skeleton

from .grouping import seed_people
from .inputs import check_maps, outputs_to_maps, required_keys
from .long_range import LongRangeMaps, complete
from .masks import assign_body_cells, boxes, upsample_masks
from .sampling import Snapper
from .scores import rank_people, soft_nms_scores
from .voting import find_candidates, hough_maps
from .walk import WalkMaps, walk

if TYPE_CHECKING:  # pragma: no cover
    from strongpose.config import Config


@dataclass
class Person:
    """A decoded person, in original-image pixels."""

    keypoints: np.ndarray                       # (K, 3): x, y, score (0: not found)
    score: float                                # soft keypoint-NMS score
    box: tuple[float, float, float, float]      # x, y, w, h: box of mask and found keypoints
    mask: Optional[np.ndarray] = None           # bool (H_orig, W_orig) or None


def decode(maps: Mapping[str, np.ndarray], *, skeleton: Skeleton, stride: int, disk_radius: float,
           cfg: DecoderConfig, transform: ImageTransform | None = None) -> list[Person]:
    """Maps of one image (docs/MAPS.md, ``(h, w, C)`` probabilities) -> people, best first."""
    if stride < 1 or not 0 < disk_radius < math.inf:
        raise ValueError(f"decode: stride must be >= 1 and disk_radius > 0, got {stride}, {disk_radius}")
    if transform is not None and not 0 < transform.scale < math.inf:
        raise ValueError(f"decode: transform.scale must be > 0, got {transform.scale}")
    m = check_maps(maps, required_keys(cfg.use_long_range, cfg.instance_masks), skeleton)
    map_shape = m["heatmap"].shape
    transform = transform or _identity_transform(map_shape, stride)

    # §2 voting and candidates
    strong, score_map = hough_maps(m["heatmap"], m["short"], stride, disk_radius)
    cands = find_candidates(strong, score_map, m["short"], stride=stride,
                            threshold=cfg.peak_threshold, max_per_type=cfg.max_candidates_per_type,
                            max_total=cfg.max_candidates)
    if len(cands) == 0:
        return []
    # §3-5 walks, long-range completion, seeding
    walk_maps = WalkMaps(mid=m["mid"], score_map=score_map,
                         snap=Snapper.build(m["heatmap"], m["short"], stride, cfg.snap_steps))
    kw = dict(threshold=cfg.peak_threshold, radius=cfg.nms_radius)
    walker = functools.partial(walk, maps=walk_maps, skeleton=skeleton, **kw)
    completer = None
    if cfg.use_long_range:
        completer = functools.partial(
            complete, maps=LongRangeMaps.build(m["long"], m["body"], walk_maps), skeleton=skeleton,
            body_threshold=cfg.body_threshold, unchecked_weight=cfg.unchecked_vote_weight, **kw)
    people = seed_people(cands, walker, completer, skeleton=skeleton,
                         radius=cfg.nms_radius, max_people=cfg.max_people)
    # §6 scores
    person_scores, _ = soft_nms_scores(people.xy, people.score, cfg.nms_radius)
    keep = rank_people(person_scores, min_score=cfg.min_person_score, max_people=cfg.max_people)
    people, person_scores = people.take(keep), person_scores[keep]
    # §7 output: original pixels, masks, boxes
    size = original_size(transform, map_shape, stride)
    xy = np.clip(transform.to_original(people.xy), 0, np.array([size[1] - 1, size[0] - 1], np.float32))
    kps = np.concatenate([xy, people.score[..., None]], axis=-1).astype(np.float32)
    masks: list[Optional[np.ndarray]] = [None] * len(people)
    extents: list = [None] * len(people)
    if cfg.instance_masks and len(people):
        labels = assign_body_cells(m["body"], m["long"], people.xy, people.found, stride=stride,
                                   body_threshold=cfg.body_threshold,
                                   mask_threshold=cfg.mask_threshold, min_scale=disk_radius)
        masks, extents = upsample_masks(labels, m["body"], len(people), stride=stride,
                                        transform=transform, size=size,
                                        body_threshold=cfg.body_threshold)
    return [Person(keypoints=kps[j], score=float(person_scores[j]), box=box, mask=masks[j])
            for j, box in enumerate(boxes(extents, kps))]


def _identity_transform(shape: tuple[int, ...], stride: int) -> ImageTransform:
    """The original image is the whole network input."""
    h, w = shape[:2]
    return ImageTransform(original_width=stride * (w - 1) + 1, original_height=stride * (h - 1) + 1)


def original_size(t: ImageTransform, shape: tuple[int, ...], stride: int) -> tuple[int, int]:
    """(H, W) of the original image: from the transform, else what the input covers."""
    h, w = shape[:2]
    width = t.original_width or int(math.ceil((stride * (w - 1) + 1 - t.offset_x) / t.scale))
    height = t.original_height or int(math.ceil((stride * (h - 1) + 1 - t.offset_y) / t.scale))
    return max(height, 1), max(width, 1)


@dataclass(frozen=True)
class Decoder:
    """The decoder's constants; ``decoder(maps, transform)`` runs :func:`decode`."""

    skeleton: Skeleton
    stride: int
    disk_radius: float
    cfg: DecoderConfig = field(default_factory=DecoderConfig)

    @classmethod
    def from_config(cls, cfg: "Config", stride: Optional[int] = None) -> "Decoder":
        """Decoder for ``cfg``; stride defaults to the evaluation output stride."""
        return cls(skeleton=cfg.skeleton,
                   stride=int(stride if stride is not None else cfg.eval_output_stride),
                   disk_radius=float(cfg.codec.disk_radius), cfg=cfg.decoder)

    def __call__(self, maps: Mapping[str, np.ndarray],
                 transform: ImageTransform | None = None) -> list[Person]:
        """People in one image's maps, best score first."""
        return decode(maps, skeleton=self.skeleton, stride=self.stride,
                      disk_radius=self.disk_radius, cfg=self.cfg, transform=transform)

    def decode_outputs(self, outputs: Mapping[str, Any],
                       transforms: Sequence[ImageTransform | None] | None = None) -> list[list[Person]]:
        """A batch of network outputs (``strongpose.model``: logits, batched, any Keras
        backend) -> each image's people in its original pixels.

        ``transforms[b]`` says how image b became the network input (resize, padding);
        None: the original image is the whole input.
        """
        keys = required_keys(self.cfg.use_long_range, self.cfg.instance_masks)
        batch = outputs_to_maps(outputs, keys)
        n = next(iter(batch.values())).shape[0]
        transforms = [None] * n if transforms is None else list(transforms)
        if len(transforms) != n:
            raise ValueError(f"decode_outputs: {len(transforms)} transforms for a batch of {n} images")
        return [self({key: arr[b] for key, arr in batch.items()}, transforms[b]) for b in range(n)]
