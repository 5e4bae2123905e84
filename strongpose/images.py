"""Any image a user has -> RGB uint8 ``(H, W, 3)``, or one clear error naming the input.

    from strongpose.images import read_image, to_rgb
    rgb = read_image("photo.jpg")              # EXIF orientation applied, CMYK/16-bit/alpha handled
    rgb = to_rgb(frame, channel_order="bgr")   # an OpenCV frame
    rgb = load(source)                         # a path or an array: whichever it is

Files are decoded with OpenCV (``IMREAD_COLOR``: EXIF orientation applied, grayscale,
CMYK JPEGs and 16-bit PNGs become 8-bit BGR, alpha dropped), after checks that give one
line per problem: missing, empty, truncated (a JPEG without its end marker, a PNG without
``IEND``), not an image, too small. Arrays may be ``(H, W)``, ``(H, W, 1|3|4)``,
uint8 / uint16 (0..65535, scaled to 0..255) / float (0..255, the network's range) / bool.
Alpha is dropped (a transparent pixel keeps its colour). Every problem is an
:class:`ImageError` (a ``ValueError``) whose message begins with the input's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

ImageSource = Union[str, os.PathLike, np.ndarray]

MIN_SIDE = 2                     # a side shorter than this cannot be resized meaningfully
MAX_PIXELS = 200_000_000         # larger images are refused before decoding (memory)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2",
                  ".pbm", ".pgm", ".ppm", ".pnm", ".sr", ".ras", ".exr", ".hdr", ".pic")
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
_TAIL = 4096                     # bytes at a file's end searched for its end marker


class ImageError(ValueError):
    """An input that is not a usable image; the message names the input and the problem."""


def describe(source: Any) -> str:
    """A short name of an input for messages: the path, or the array's shape and dtype."""
    if isinstance(source, np.ndarray):
        return f"array {source.shape} {source.dtype}"
    return str(source)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s suffix is one OpenCV reads as an image."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _check_complete(data: bytes, name: str) -> None:
    """Refuse a JPEG or PNG whose end marker is missing (a truncated download or copy)."""
    tail = data[-_TAIL:]
    if data.startswith(_JPEG_START) and _JPEG_END not in tail:
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
    if data.startswith(_PNG_START) and _PNG_END not in tail:
        raise ImageError(f"{name}: truncated PNG (no IEND chunk)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)``, EXIF orientation applied.

    Raises:
        ImageError: missing, not a file, unreadable, empty, truncated, not an image,
            smaller than 2x2 or larger than ``MAX_PIXELS``; the message names the path.
    """
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{name}: no such file")
    if not p.is_file():
        raise ImageError(f"{name}: not a file")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ImageError(f"{name}: cannot be read ({err.strerror or err})") from None
    if not data:
        raise ImageError(f"{name}: empty file")
    _check_complete(data, name)
    buf = np.frombuffer(data, np.uint8)
    header = _header_size(data)
    if header is not None and header[0] * header[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {header[1]}x{header[0]} pixels is more than {MAX_PIXELS} "
                         f"(downscale it first)")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not an image OpenCV can decode (corrupt, or another kind of file)")
    return _check_size(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), name)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) from a PNG header (cheap); None for other formats."""
    if data.startswith(_PNG_START) and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    return None


def _check_size(image: np.ndarray, name: str) -> np.ndarray:
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {w}x{h} pixels is too small (each side must be >= {MIN_SIDE})")
    return image


def to_rgb(array: np.ndarray, channel_order: str = "rgb", name: str | None = None) -> np.ndarray:
    """An image array -> RGB uint8 ``(H, W, 3)`` (a new array; the input is not changed).

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped);
            uint8, uint16 (scaled by 255/65535), bool, or float in 0..255.
        channel_order: "rgb" or "bgr" (OpenCV's order) for 3- and 4-channel arrays.
        name: how messages name the input (default: shape and dtype).
    """
    name = name or describe(array)
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"{name}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    a = _to_uint8(a, name)
    if a.ndim == 2:
        return _check_size(np.repeat(a[..., None], 3, axis=-1), name)
    a = a[..., :3]
    return _check_size(np.ascontiguousarray(a[..., ::-1] if channel_order == "bgr" else a), name)


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not np.isfinite(a).all():
            raise ImageError(f"{name}: holds NaN or Inf")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ImageError(f"{name}: float values must lie in 0..255 "
                             f"(got {a.min():.3g}..{a.max():.3g})")
        return np.rint(a).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ImageError(f"{name}: {a.dtype} values must lie in 0..255")
        return a.astype(np.uint8)
    raise ImageError(f"{name}: unsupported dtype {a.dtype}")


def load(source: ImageSource, channel_order: str = "rgb", name: str | None = None) -> np.ndarray:
    """A path (read with :func:`read_image`) or an array (:func:`to_rgb`; ``name`` for its
    messages) -> RGB uint8."""
    if isinstance(source, np.ndarray):
        return to_rgb(source, channel_order, name)
    if isinstance(source, (str, os.PathLike)):
        return read_image(source)
    raise ImageError(f"{type(source).__name__}: not an image path or array")
