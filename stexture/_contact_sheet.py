"""Contact sheets: rows of same-height image tiles under a header naming the columns.

The one painter behind ``stexture inspect``'s sheet (:func:`stexture.shards.validate.
contact_sheet`) and the demo's cue-conflict sheet (:func:`stexture.demo.write_demo_sheet`);
the callers choose the tiles and write the file (the inspect sheet atomically, never through
a link).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SheetRow", "fit_height", "paint_contact_sheet"]

_BLACK = (0, 0, 0)
_WHITE = (255, 255, 255)
# PIL's default bitmap font: about 6 pixels per character, 11 high
_CHAR_WIDTH = 6
_TEXT_HALF_HEIGHT = 6


@dataclass(frozen=True)
class SheetRow:
    """One row of a contact sheet: a label on the left, tiles, and an optional note after
    them."""

    label: str
    tiles: Sequence[np.ndarray]
    note: str = ""


def fit_height(pixels: np.ndarray, height: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """``pixels`` (uint8 ``HxWx3``) resized to ``height`` rows, keeping the aspect ratio.

    Parameters
    ----------
    pixels : ndarray
        uint8 ``(H, W, 3)`` image.
    height : int
        Rows of the result.
    interpolation : int
        An OpenCV interpolation flag: ``cv2.INTER_AREA`` (the default) averages,
        ``cv2.INTER_NEAREST`` keeps single pixels visible when enlarging small images.

    Returns
    -------
    ndarray
        uint8 ``(height, max(1, round(W * height / H)), 3)``.
    """
    h, w = pixels.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(pixels, (width, height), interpolation=interpolation)


def _draw_row(row: SheetRow, height: int, label_width: int, note_width: int,
              gap: int, interpolation: int) -> tuple[Image.Image, list[int]]:
    tiles = [fit_height(tile, height, interpolation) for tile in row.tiles]
    width = label_width + sum(t.shape[1] + gap for t in tiles) + note_width
    canvas = Image.new("RGB", (width, height), _WHITE)
    x = label_width
    for tile in tiles:
        canvas.paste(Image.fromarray(tile), (x, 0))
        x += tile.shape[1] + gap
    draw = ImageDraw.Draw(canvas)
    text_y = height // 2 - _TEXT_HALF_HEIGHT
    # a long label is cut where it would run into the first tile
    draw.text((4, text_y), row.label[:max(1, (label_width - 8) // _CHAR_WIDTH)], fill=_BLACK)
    if row.note:
        draw.text((x + 4, text_y), row.note, fill=_BLACK)
    return canvas, [t.shape[1] for t in tiles]


def paint_contact_sheet(
    rows: Sequence[SheetRow],
    titles: Sequence[str],
    *,
    height: int,
    label_width: int,
    header_height: int = 16,
    note_width: int = 0,
    gap: int = 4,
    interpolation: int = cv2.INTER_AREA,
) -> Image.Image:
    """Paint ``rows`` under a header of ``titles``.

    Parameters
    ----------
    rows : sequence of SheetRow
        Top to bottom; every row's tiles are scaled to ``height`` rows (:func:`fit_height`).
    titles : sequence of str
        One per tile column, then one for the notes' column when ``note_width`` > 0;
        placed over the first row's tiles.
    height : int
        Height of every tile and row, in pixels.
    label_width : int
        Width of the label column on the left.
    header_height : int
        Height of the header band.
    note_width : int
        Width of the column after the tiles that holds each row's note (0: none).
    gap : int
        White pixels between tiles and between rows.
    interpolation : int
        OpenCV interpolation flag the tiles are scaled with.

    Returns
    -------
    PIL.Image.Image
        The sheet, RGB, as wide as its widest row.
    """
    if not rows:
        raise ValueError("no samples to draw a contact sheet from")
    painted = [_draw_row(row, height, label_width, note_width, gap, interpolation)
               for row in rows]
    width = max(canvas.width for canvas, _ in painted)
    sheet = Image.new("RGB", (width, header_height + sum(c.height + gap for c, _ in painted)),
                      _WHITE)
    draw = ImageDraw.Draw(sheet)
    x = label_width
    column_widths = [*painted[0][1], note_width] if note_width else painted[0][1]
    for title, column_width in zip(titles, column_widths, strict=True):
        draw.text((x, 2), title, fill=_BLACK)
        x += column_width + gap
    y = header_height
    for canvas, _ in painted:
        sheet.paste(canvas, (0, y))
        y += canvas.height + gap
    return sheet
