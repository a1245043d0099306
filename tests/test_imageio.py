"""Decoding photos to 8-bit RGB: the mode rules, EXIF orientation and the rejection reasons."""

import io

import numpy as np
import pytest
from PIL import Image

from stexture.imageio import REJECT_REASONS, ImageReadError, decode_rgb_bytes, read_rgb


def encoded(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_passes_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_rgb_bytes(encoded(Image.fromarray(pixels)))
    assert out.dtype == np.uint8 and np.array_equal(out, pixels)


def test_gray_is_copied_to_three_channels():
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    out = decode_rgb_bytes(encoded(Image.fromarray(gray)))
    assert out.shape == (5, 7, 3)
    assert all(np.array_equal(out[:, :, c], gray) for c in range(3))


def test_16_bit_gray_is_scaled_not_clipped():
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    out = decode_rgb_bytes(encoded(Image.fromarray(wide)))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[1, 1] = (10, 20, 30, 0)  # transparent: white
    out = decode_rgb_bytes(encoded(Image.fromarray(rgba)))
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_palette_is_looked_up():
    img = Image.new("P", (3, 2))
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    img.putpixel((1, 0), 1)
    out = decode_rgb_bytes(encoded(img))
    assert out[0, 1].tolist() == [200, 100, 50] and out[0, 0].tolist() == [0, 0, 0]


def test_cmyk_uses_the_documented_rule():
    img = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # pure cyan-free red: C=0, M=Y=255
    out = decode_rgb_bytes(encoded(img, "TIFF"))
    assert out[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied():
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255  # a white corner, top left
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_rgb_bytes(encoded(img, "PNG", exif=exif))
    assert out.shape == (6, 4, 3)
    assert out[0, -1].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (b"", {}, "empty"),
        (b"this is not an image", {}, "not_an_image"),
        (encoded(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")[:1500], {}, "corrupt"),
        (encoded(Image.new("RGB", (300, 300))), {"max_pixels": 300 * 299}, "too_many_pixels"),
        (encoded(Image.new("RGB", (40, 10))), {"min_side": 16}, "too_small"),
    ],
)
def test_bad_bytes_are_named_with_a_reason(data, kwargs, reason):
    with pytest.raises(ImageReadError) as info:
        decode_rgb_bytes(data, "photo.jpg", **kwargs)
    assert info.value.reason == reason and reason in REJECT_REASONS
    assert "photo.jpg" in str(info.value)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(ImageReadError) as info:
        read_rgb(tmp_path / "nope.png")
    assert info.value.reason == "unreadable"
