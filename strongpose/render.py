"""Drawing: people (skeletons, boxes, instance masks) and the network's maps, with OpenCV.

    from strongpose.render import draw_people, render_maps
    picture = draw_people(rgb, people, cfg.skeleton)            # RGB uint8, a new array
    panels = render_maps(rgb, maps, transform, cfg)             # {"heatmap": RGB, "hough": ..., ...}

Every function takes and returns RGB uint8 images in the original image's pixels; maps
(one image's probability maps and offsets, ``(h, w, C)``, as ``Prediction.maps``) are
brought onto the picture through the image's :class:`strongpose.geometry.ImageTransform`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from strongpose.geometry import ImageTransform
from strongpose.post_proc.voting import hough_maps
from strongpose.skeleton import Skeleton

MAP_PANELS = ("heatmap", "hough", "short", "mid", "long", "body", "masks")
KEYPOINT_MIN_SCORE = 0.05      # keypoints scoring below are not drawn
_ARROW_CELLS = 400             # at most this many arrows per offset panel


def person_colour(index: int) -> tuple[int, int, int]:
    """A distinct RGB colour per person index (golden-angle hues)."""
    hue = int((index * 137.508) % 180)
    bgr = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[2]), int(bgr[1]), int(bgr[0])


def _thickness(image: np.ndarray) -> int:
    return max(1, int(round(max(image.shape[:2]) / 300)))


def draw_people(image: np.ndarray, people: Sequence, skeleton: Skeleton, *,
                masks: bool = True, boxes: bool = True,
                min_score: float = KEYPOINT_MIN_SCORE) -> np.ndarray:
    """``image`` (RGB uint8) with each person's mask (translucent), box, limbs and keypoints."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    t = _thickness(out)
    if masks:
        for j, p in enumerate(people):
            if p.mask is not None and p.mask.shape == out.shape[:2]:
                m = p.mask.astype(bool)
                out[m] = (0.55 * out[m] + 0.45 * np.array(person_colour(j))).astype(np.uint8)
    for j, p in enumerate(people):
        colour = person_colour(j)
        kps = np.asarray(p.keypoints, np.float32)
        if boxes:
            x, y, w, h = (float(v) for v in p.box)
            cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), colour, t)
        for a, b in skeleton.edges:
            if kps[a, 2] >= min_score and kps[b, 2] >= min_score:
                cv2.line(out, _pt(kps[a]), _pt(kps[b]), colour, t + 1, cv2.LINE_AA)
        for k in np.nonzero(kps[:, 2] >= min_score)[0]:
            cv2.circle(out, _pt(kps[k]), t + 2, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, _pt(kps[k]), t + 2, colour, max(1, t // 2), cv2.LINE_AA)
    return out


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def map_to_image(values: np.ndarray, transform: ImageTransform, stride: int,
                 size: tuple[int, int]) -> np.ndarray:
    """A one-channel map ``(h, w)`` (cell (i, j) at input point (s*j, s*i)) -> ``size`` (H, W)
    of the original image, bilinear: original pixel ``x`` reads input point ``scale*x + offset``."""
    v = np.asarray(values, np.float32)
    a = transform.scale / stride
    m = np.float32([[a, 0, transform.offset_x / stride], [0, a, transform.offset_y / stride]])
    return cv2.warpAffine(v, m, (int(size[1]), int(size[0])), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``values`` in [0, 1] (H, W) as a jet colour map blended over ``image``."""
    heat = cv2.applyColorMap(np.uint8(np.clip(values, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * np.clip(values, 0, 1))[..., None]
    return (image * (1 - weight) + heat * weight).astype(np.uint8)


def draw_offsets(image: np.ndarray, starts: np.ndarray, vectors: np.ndarray,
                 transform: ImageTransform, colour=(255, 255, 0)) -> np.ndarray:
    """Arrows from input-image points ``starts`` (N, 2) along ``vectors`` (N, 2, input pixels)."""
    out = image.copy()
    if len(starts) > _ARROW_CELLS:
        keep = np.linspace(0, len(starts) - 1, _ARROW_CELLS).astype(int)
        starts, vectors = starts[keep], vectors[keep]
    a, b = transform.to_original(starts), transform.to_original(starts + vectors)
    t = max(1, _thickness(out) // 2)
    for p, q in zip(a, b):
        cv2.arrowedLine(out, _pt(p), _pt(q), colour, t, cv2.LINE_AA, tipLength=0.2)
    return out


def _field_arrows(image, field: np.ndarray, where: np.ndarray, stride: int,
                  transform: ImageTransform, colour) -> np.ndarray:
    """Arrows of the (dx, dy) ``field (h, w, 2)`` at the cells where ``where`` holds."""
    ii, jj = np.nonzero(where)
    starts = np.stack([jj * stride, ii * stride], -1).astype(np.float32)
    return draw_offsets(image, starts, field[ii, jj], transform, colour)


def render_maps(image: np.ndarray, maps: Mapping[str, np.ndarray], transform: ImageTransform,
                skeleton: Skeleton, stride: int, disk_radius: float, people: Sequence = (),
                keypoint: int = 0, edge: int = 0) -> dict[str, np.ndarray]:
    """The original README's pictures of one image's maps (see ``MAP_PANELS``).

    ``heatmap``: max over keypoint heat maps; ``hough``: the Hough-voted strong maps (scaled
    so the highest peak is 1);
    ``short``: short-range offsets at cells inside keypoint disks; ``mid``: directed edge
    ``edge``'s mid-range offsets inside its source keypoint's disks; ``long``: long-range
    offsets to keypoint ``keypoint`` on the body; ``body``: the body heat map; ``masks``:
    the people's instance masks.
    """
    size = image.shape[:2]
    heat, short, body = maps["heatmap"], maps["short"], maps["body"][..., 0]
    strong, _ = hough_maps(heat, short, stride, disk_radius)
    panels = {"heatmap": overlay(image, map_to_image(heat.max(-1), transform, stride, size)),
              "hough": overlay(image, map_to_image(strong.max(-1) / max(float(strong.max()), 1e-6),
                                                   transform, stride, size)),   # peak = 1
              "body": overlay(image, map_to_image(body, transform, stride, size))}
    inside = heat > 0.5
    k_best = np.argmax(np.where(inside, heat, -1), axis=-1)
    ii, jj = np.meshgrid(np.arange(heat.shape[0]), np.arange(heat.shape[1]), indexing="ij")
    pairs = short.reshape(*short.shape[:2], -1, 2)
    panels["short"] = _field_arrows(image, pairs[ii, jj, k_best], inside.any(-1), stride, transform,
                                    (255, 255, 0))
    a, _ = skeleton.directed_edges[edge]
    mid = maps["mid"].reshape(*heat.shape[:2], -1, 2)[:, :, edge]
    panels["mid"] = _field_arrows(image, mid, heat[..., a] > 0.5, stride, transform, (0, 255, 0))
    long = maps["long"].reshape(*heat.shape[:2], -1, 2)[:, :, keypoint]
    panels["long"] = _field_arrows(image, long, body > 0.5, stride, transform, (255, 0, 255))
    panels["masks"] = draw_people(image, people, skeleton, boxes=False, min_score=np.inf)
    return panels
