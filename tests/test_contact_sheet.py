"""The contact-sheet painter shared by `stexture inspect` and the demo: where every tile lands."""

import cv2
import numpy as np
import pytest

from stexture._contact_sheet import SheetRow, fit_height, paint_contact_sheet


def _solid(value: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_tiles_land_where_the_layout_says():
    a, b, c = _solid(1, 20, 30), _solid(2, 20, 10), _solid(3, 20, 16)
    rows = [SheetRow("chair", (a, b), note="0.8 chair"), SheetRow("sofa", (c, a))]
    sheet = np.asarray(paint_contact_sheet(rows, ("one", "two", "note"), height=20,
                                           label_width=50, header_height=16, note_width=70,
                                           gap=4, interpolation=cv2.INTER_NEAREST))
    # rows as wide as their tiles: the widest sets the sheet's width
    assert sheet.shape == (16 + 2 * (20 + 4), 50 + 16 + 4 + 30 + 4 + 70, 3)  # the second row
    np.testing.assert_array_equal(sheet[16:36, 50:80], a)
    np.testing.assert_array_equal(sheet[16:36, 84:94], b)
    np.testing.assert_array_equal(sheet[40:60, 50:66], c)
    np.testing.assert_array_equal(sheet[40:60, 70:100], a)
    # the gaps stay white; the label, note and header are drawn in dark (antialiased) text
    assert (sheet[16:36, 80:84] == 255).all() and (sheet[36:40] == 255).all()
    assert (sheet[16:36, :50] < 128).any() and (sheet[16:36, 98:] < 128).any()
    assert (sheet[:16] < 128).any()
    assert (sheet[40:60, 104:] == 255).all()  # the second row has no note


def test_tiles_are_scaled_to_the_row_height_keeping_the_aspect():
    tile = _solid(4, 10, 25)
    assert fit_height(tile, 20).shape == (20, 50, 3)
    assert fit_height(tile[:, :1], 4).shape == (4, 1, 3)  # never narrower than a pixel
    np.testing.assert_array_equal(fit_height(tile, 20, cv2.INTER_NEAREST)[::2, ::2], tile)


def test_a_long_label_is_cut_before_the_first_tile():
    tile = np.zeros((20, 8, 3), np.uint8) + 200
    sheet = np.asarray(paint_contact_sheet([SheetRow("x" * 80, (tile,))], ("t",), height=20,
                                           label_width=40, header_height=10))
    np.testing.assert_array_equal(sheet[10:30, 40:48], tile)


def test_no_rows_and_wrong_titles_are_errors():
    with pytest.raises(ValueError, match="no samples"):
        paint_contact_sheet([], ("a",), height=8, label_width=10)
    with pytest.raises(ValueError):
        paint_contact_sheet([SheetRow("a", (_solid(5, 8, 8),))], ("a", "b"), height=8,
                            label_width=10)
