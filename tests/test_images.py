"""strongpose.images: every kind of image a user has -> RGB uint8, or one error naming it."""

import cv2
import numpy as np
import pytest
from PIL import Image

from strongpose.images import ImageError, load, read_image, to_rgb


@pytest.fixture
def picture(rng):
    """A 30x40 RGB picture with a distinct red left edge."""
    img = (rng.random((30, 40, 3)) * 100).astype(np.uint8)
    img[:, :5] = (250, 10, 10)
    return img


def test_png_round_trip_is_rgb(tmp_path, picture):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), picture[..., ::-1])          # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(path), picture)


def test_arrays_of_every_layout(picture):
    np.testing.assert_array_equal(to_rgb(picture[..., ::-1], "bgr"), picture)
    gray = picture[..., 0]
    assert to_rgb(gray).shape == (30, 40, 3) and (to_rgb(gray)[..., 2] == gray).all()
    assert (to_rgb(gray[..., None])[..., 1] == gray).all()
    rgba = np.concatenate([picture, np.zeros((30, 40, 1), np.uint8)], axis=-1)
    np.testing.assert_array_equal(to_rgb(rgba), picture)
    np.testing.assert_array_equal(to_rgb(picture.astype(np.uint16) * 257), picture)
    np.testing.assert_array_equal(to_rgb(picture.astype(np.float32)), picture)
    assert to_rgb(np.ones((4, 4), bool)).max() == 255


def test_sixteen_bit_png_and_alpha_png(tmp_path, picture):
    path16 = tmp_path / "deep.png"
    cv2.imwrite(str(path16), picture[..., ::-1].astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(path16), picture)
    path_a = tmp_path / "alpha.png"
    Image.fromarray(np.concatenate([picture, np.full((30, 40, 1), 7, np.uint8)], -1), "RGBA").save(path_a)
    np.testing.assert_array_equal(read_image(path_a), picture)


def test_exif_orientation_is_applied(tmp_path, picture):
    im = Image.fromarray(picture)
    exif = im.getexif()
    exif[0x0112] = 6                         # rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (40, 30, 3)
    assert out[:5, :, 0].mean() > 200 and out[-5:, :, 0].mean() < 150   # the red edge is on top


def test_cmyk_jpeg(tmp_path, picture):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(picture).convert("CMYK").save(path, quality=95)
    out = read_image(path)
    assert out.shape == (30, 40, 3) and out[:, :5, 0].mean() > 200


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("hello, not a picture"), "not an image"),
    (lambda p: p.write_bytes(open(p.with_name("good.jpg"), "rb").read()[:300]), "truncated"),
    (lambda p: cv2.imwrite(str(p.with_suffix(".png")), np.zeros((1, 1, 3), np.uint8))
     and p.write_bytes(p.with_suffix(".png").read_bytes()), "too small"),
])
def test_bad_files_name_the_input(tmp_path, picture, make, words):
    cv2.imwrite(str(tmp_path / "good.jpg"), picture)
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageError, match=words) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_arrays():
    with pytest.raises(ImageError, match="0..255"):
        to_rgb(np.full((4, 4, 3), 300.0))
    with pytest.raises(ImageError, match="NaN"):
        to_rgb(np.full((4, 4, 3), np.nan))
    with pytest.raises(ImageError, match=r"\(H, W\)"):
        to_rgb(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="too small"):
        to_rgb(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="not an image path"):
        load(12)
