"""Reading photos into 8-bit RGB arrays, and writing layers as PNG.

Every photo becomes an 8-bit RGB ``HxWx3`` array by one rule, applied in this order:

1. the first frame of a multi-frame file (GIF, TIFF) is used;
2. the EXIF orientation tag is applied (the pixels are rotated/flipped, the tag dropped);
3. the mode is mapped to RGB:

   - ``RGB``: unchanged; 16-bit-per-channel RGB PNG/TIFF arrive as 8-bit from Pillow
     (the high byte);
   - ``L`` / ``1`` (gray, bilevel): the gray value is copied to the three channels;
   - ``I;16*`` and ``I`` (16- and 32-bit gray): taken as 16-bit, scaled to 8 bits by
     ``round(v / 257)`` after clipping to [0, 65535] (so 65535 -> 255, not a clipped 255
     for everything above 255, which is what a plain Pillow ``convert`` would do);
   - ``F`` (float gray): clipped to [0, 255] and rounded;
   - ``P`` (palette): looked up in the palette;
   - any mode with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index):
     composited over white, then the alpha is dropped;
   - ``CMYK``: Pillow's conversion ``R = 255 - min(255, C + K)`` (likewise G, B); embedded
     ICC profiles are not applied to any mode;
   - anything else (``YCbCr``, ``LAB``, ``HSV``): Pillow's ``convert("RGB")``.

:func:`decode_rgb_bytes` also checks the size from the header before any pixel is decoded
(a decompression bomb costs nothing to reject), and raises :class:`ImageReadError` with a
short ``reason`` code for everything that goes wrong.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "REJECT_REASONS",
    "JPEG_REDUCTIONS",
    "ImageReadError",
    "decode_jpeg_reduced",
    "decode_jpeg_whole",
    "decode_rgb_bytes",
    "decode_with_opencv",
    "image_size",
    "jpeg_size",
    "pillow_pixel_limit",
    "read_rgb",
    "texture_to_display",
    "to_rgb",
    "write_png",
]

# The reasons an input can be rejected for, with what each one means.
REJECT_REASONS = {
    "unreadable": "the file cannot be opened (missing, a permission problem, an I/O error)",
    "empty": "the file has zero bytes",
    "not_an_image": "the bytes are not an image format Pillow knows",
    "corrupt": "the header is an image but the pixels cannot be decoded (truncated, damaged)",
    "too_many_pixels": "more pixels than --max-pixels (a decompression bomb)",
    "too_small": "the shorter side is below --min-side",
    "duplicate": "the same decoded pixels as an earlier input (kept once)",
    "no_class": "not inside a class folder, or no label in the manifest",
    "empty_class": "a class folder with no image files",
    "bad_label": "a class name with a control character (a newline, a tab): it would print "
                 "as a row of its own",
    "linked_folder": "a class folder that is a symbolic link (links to folders are not "
                     "followed)",
}


class ImageReadError(ValueError):
    """An image that cannot be read; the message names the file and the reason.

    ``reason`` is one of :data:`REJECT_REASONS`.
    """

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> np.ndarray:
    """An opened Pillow image as 8-bit RGB ``HxWx3`` by the rule in the module docstring."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return np.asarray(_composite_on_white(img))
    if mode.startswith("I"):
        wide = np.asarray(img).astype(np.float64)
        gray = np.rint(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.rint(np.clip(np.asarray(img), 0, 255)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


_PILLOW_LIMIT_LOCK = threading.Lock()


def _new_lock_in_child() -> None:
    # a process forked while another thread held the lock would wait on it forever
    global _PILLOW_LIMIT_LOCK
    _PILLOW_LIMIT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


@contextmanager
def pillow_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Let Pillow open images of up to ``max_pixels`` pixels in this block (the caller checks
    the size itself). Pillow only warns between its limit (``Image.MAX_IMAGE_PIXELS``) and
    twice it, which is silenced here, and refuses past twice it, which would overrule a
    ``--max-pixels`` above that; only then is its limit raised, for the block and under a
    lock (so concurrent raisers do not undo each other), and never lowered.
    """
    with warnings.catch_warnings():
        # the pixel limit is the caller's: Pillow's warning below twice its own is noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or max_pixels is None or max_pixels <= 2 * limit:
            yield
            return
        with _PILLOW_LIMIT_LOCK:
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = limit


def _open(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    """The image, opened (header only), its size checked against ``max_pixels``; call inside
    :func:`pillow_pixel_limit`."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: cannot be read as an image (the file is empty)", "empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: too many pixels ({exc})", "too_many_pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(
            f"{name}: cannot be read as an image (not an image format: {exc})",
            "not_an_image",
        ) from exc
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise ImageReadError(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{max_pixels} (a decompression bomb?)", "too_many_pixels")
    return img


def image_size(data: bytes, name: str = "<bytes>", max_pixels: int | None = None
               ) -> tuple[int, int]:
    """``(width, height)`` as an image's header declares it, without decoding a pixel.

    Raises
    ------
    ImageReadError
        ``empty``, ``not_an_image``, or ``too_many_pixels`` when the size is over
        ``max_pixels``.
    """
    with pillow_pixel_limit(max_pixels), _open(data, name, max_pixels) as img:
        return img.size


def decode_rgb_bytes(
    data: bytes, name: str = "<bytes>", max_pixels: int | None = None, min_side: int = 0
) -> np.ndarray:
    """Decode image bytes to 8-bit RGB ``HxWx3`` (see the module docstring for the rule).

    Parameters
    ----------
    data : bytes
        The file's content.
    name : str
        How to name the input in error messages.
    max_pixels : int, optional
        Reject images with more pixels than this, judged from the header before decoding
        (Pillow's own limit is raised to it where lower).
    min_side : int
        Reject images whose shorter side is below this.

    Raises
    ------
    ImageReadError
        With ``reason`` ``empty``, ``not_an_image``, ``corrupt``, ``too_many_pixels`` or
        ``too_small``.
    """
    with pillow_pixel_limit(max_pixels), _open(data, name, max_pixels) as img:
        width, height = img.size
        if min(width, height) < min_side:
            raise ImageReadError(
                f"{name}: {width}x{height} is smaller than the minimum side {min_side}",
                "too_small",
            )
        try:
            img.load()
            if img.format == "JPEG":
                _check_jpeg_scan_complete(data)
            return to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(f"{name}: too many pixels ({exc})", "too_many_pixels") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageReadError(
                f"{name}: cannot be read as an image (corrupt or truncated: {exc})", "corrupt"
            ) from exc


def _check_jpeg_scan_complete(data: bytes) -> None:
    """``ValueError`` for a JPEG whose coded data ends before its last block: a file cut
    short and given an end marker decodes without error, its missing part grey. libjpeg
    says "premature end of data segment" only as a warning, which Pillow and OpenCV drop;
    simplejpeg's strict mode raises it. Other warnings (extraneous bytes, as some cameras
    write) do not reject a photo."""
    try:
        simplejpeg.decode_jpeg(data, strict=True)
    except ValueError as exc:
        if "premature end" in str(exc).lower():
            raise ValueError(f"the JPEG data ends early ({exc})") from None


#: the DCT scales :func:`decode_jpeg_reduced` decodes at (1/2, 1/4, 1/8 of each side)
JPEG_REDUCTIONS = (2, 4, 8)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a colour (YCbCr) JPEG's header without decoding a pixel
    (microseconds), or ``None`` when ``data`` is not one libjpeg-turbo can read, is in
    another colour space (gray, CMYK: :func:`decode_rgb_bytes`'s rule applies), or carries
    EXIF data (an orientation tag would turn the decoded pixels)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace != "YCbCr" or _may_have_exif(data):
        return None
    return height, width


def _may_have_exif(data: bytes) -> bool:
    """Whether a JPEG has an APP1 EXIF segment before its scan, walking the marker segments
    (a handful; a scan of the whole file cost more than the header itself). Anything the
    walk does not understand counts as maybe."""
    i = 2  # after SOI
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: no EXIF before it
            return False
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return True


def decode_jpeg_reduced(data: bytes, factor: int, max_pixels: int) -> np.ndarray:
    """8-bit RGB pixels of a JPEG decoded at ``1/factor`` of its size by libjpeg-turbo's
    scaled inverse DCT (``factor`` in :data:`JPEG_REDUCTIONS`): ``ceil(H / factor) x
    ceil(W / factor) x 3``, several times fewer pixels to decode and to resize. At q90-95
    each pixel is within a few levels of the ``factor x factor`` box average of the full
    decode (``tests/test_loader_decode_speed.py`` states the bound).

    Raises
    ------
    ValueError
        ``factor`` not in :data:`JPEG_REDUCTIONS`, the header over ``max_pixels`` (checked
        before decoding), or corrupt data.
    """
    if factor not in JPEG_REDUCTIONS:
        raise ValueError(f"factor must be one of {JPEG_REDUCTIONS}, got {factor!r}")
    height, width = _jpeg_header_within(data, max_pixels)
    want = (-(-height // factor), -(-width // factor))
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=want[0],
                                    min_width=want[1])
    if pixels.shape[:2] != want:  # simplejpeg chose another scale
        raise ValueError(f"decoded at {pixels.shape[:2]}, not 1/{factor} of {height}x{width}")
    return pixels


def decode_jpeg_whole(data: bytes, max_pixels: int) -> np.ndarray:
    """8-bit RGB pixels of a colour JPEG (one :func:`jpeg_size` reads), decoded whole by the
    same OpenCV call as :func:`~stexture.shards.format.decode_rgb`, so the same pixels, but
    with the size read from the header by libjpeg-turbo (microseconds) instead of Pillow's
    parse of it (~35 us, 5% of a 256 px photo's decode: the loader's samples whose crop
    allows no DCT reduction).

    Raises
    ------
    ValueError
        The header over ``max_pixels`` (checked before decoding), or corrupt data.
    """
    _jpeg_header_within(data, max_pixels)
    return decode_with_opencv(data)


def decode_with_opencv(data: bytes) -> np.ndarray:
    """8-bit RGB pixels of stored image bytes decoded by OpenCV, whose size the caller has
    checked from the header already; ``ValueError`` for bytes OpenCV cannot decode."""
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    except cv2.error as exc:  # OpenCV's own limits: a ValueError like any corrupt layer
        raise ValueError(f"not a decodable image ({exc})") from None
    if pixels is None:
        raise ValueError("not a decodable image")
    return pixels


def _jpeg_header_within(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(height, width)`` from a JPEG's header; ``ValueError`` saying 'too many pixels' (as
    the full decode does, so a loader's skip warning for a bomb reads the same) when the
    header declares more than ``max_pixels``, or for a header libjpeg-turbo cannot read."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    if height * width > max_pixels:
        raise ValueError(f"too many pixels: {width}x{height} declared, over the limit of "
                         f"{max_pixels}")
    return height, width


def read_rgb(path: str | Path, max_pixels: int | None = None, min_side: int = 0) -> np.ndarray:
    """Read ``path`` as 8-bit RGB ``HxWx3`` (see :func:`decode_rgb_bytes`)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file", "unreadable")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be opened ({exc})", "unreadable") from exc
    return decode_rgb_bytes(data, str(path), max_pixels=max_pixels, min_side=min_side)


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
