"""Reading photos into 8-bit RGB arrays, and writing layers as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_rgb", "texture_to_display", "write_png"]


class ImageReadError(ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read ``path`` as 8-bit RGB ``HxWx3``, honouring the EXIF orientation.

    Gray, palette and RGBA images become RGB (alpha is dropped by compositing on white).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot be read as an image ({exc})") from exc


def texture_to_display(texture: np.ndarray) -> np.ndarray:
    """A float texture in [-1, 1] as uint8 offset to mid-grey (0 -> 128)."""
    return np.clip(np.rint(texture * 255.0 + 128.0), 0, 255).astype(np.uint8)


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write a uint8 (or [0, 1] float) gray or RGB array as PNG."""
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    Image.fromarray(pixels).save(path, format="PNG")
