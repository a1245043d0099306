"""Parametric drawings of furniture classes, built from boxes, cylinders and ellipses.

Every class is a function ``draw(sketch, rng)`` that adds parts (legs, seat, back, arms,
doors, shelves, shade, headboard ...) with random proportions to a :class:`Sketch`.
Parts are solids in object coordinates (x right, y up, z away from the viewer, floor at
y = 0, front at z = 0) seen in an oblique projection ``(x + kx z, y + ky z)``: the front
face undistorted, the top face (``ky > 0``, seen from above) and one side face (right
when ``kx > 0``) sheared behind it. Faces are painted in the order they are added
(painter's algorithm), so each drawing adds parts from back to front.

Proportions are chosen so the classes differ by shape at 64 px: a chair is a thin frame
with a back and no arms, an armchair a block with arms, a sofa the same block two to
three times as wide with several cushions, a table a wide top on legs, a bed a long low
slab with a headboard and pillows, a wardrobe a tall closed box with doors, a bookcase a
tall open frame with shelves of books, a lamp a pole or small base under a shade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["CLASSES", "DRAWINGS", "TYPICAL_MATERIALS", "Face", "Role", "Sketch"]


class Role:
    """What paints a face: the class material, or a plain colour of some kind."""

    MAIN = 0  # the object's material (the texture cue)
    TRIM = 1  # legs and frames of upholstered pieces: one plain colour per object
    SOFT = 2  # pillows, sheets: off-white plain
    BOOK = 3  # book spines: a random plain colour per face
    INNER = 4  # the inside of open furniture: the material, in shadow


@dataclass
class Face:
    """A polygon (``k x 2`` object coordinates, y up), its role and its brightness."""

    points: np.ndarray
    role: int
    shade: float
    grain: int = 0  # 1: material pattern runs vertically (legs, posts, doors)
    part: int = 0  # faces of one solid share it (one colour per book)


@dataclass
class Sketch:
    """Faces of one drawing under the oblique projection ``(x + kx z, y + ky z)``."""

    kx: float
    ky: float
    faces: list[Face] = field(default_factory=list)
    depth: float = 0.0  # deepest z used, for the footprint and the wall behind
    parts: int = 0

    def _add(self, points: np.ndarray, role: int, shade: float, grain: int = 0) -> None:
        self.faces.append(Face(points, role, shade, grain, self.parts))

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), 2))
        out[:, 0] = x + self.kx * z
        out[:, 1] = y + self.ky * z
        return out

    def box(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float,
            role: int = Role.MAIN, shade: float = 1.0, grain: int = 0) -> None:
        """A box; adds its visible side, top and front faces."""
        self.depth = max(self.depth, z1)
        kx, ky = self.kx, self.ky
        side_x = x1 if kx > 0 else x0
        # Scalar arithmetic: boxes are most of the faces and numpy per call is slower here.
        fx0, fx1, fside = x0 + kx * z0, x1 + kx * z0, side_x + kx * z0
        bx0, bx1, bside = x0 + kx * z1, x1 + kx * z1, side_x + kx * z1
        fy0, fy1, by0, by1 = y0 + ky * z0, y1 + ky * z0, y0 + ky * z1, y1 + ky * z1
        side = np.array([[fside, fy0], [fside, fy1], [bside, by1], [bside, by0]])
        top = np.array([[fx0, fy1], [fx1, fy1], [bx1, by1], [bx0, by1]])
        front = np.array([[fx0, fy0], [fx1, fy0], [fx1, fy1], [fx0, fy1]])
        self._add(side, role, 0.68 * shade, grain)
        self._add(top, role, 1.12 * shade)
        self._add(front, role, shade, grain)
        self.parts += 1

    def flat(self, points: np.ndarray, z: float, role: int = Role.MAIN,
             shade: float = 1.0, grain: int = 0) -> None:
        """A flat polygon ``points`` (x, y) standing in the plane at depth ``z``."""
        points = np.asarray(points, dtype=np.float64)
        self._add(self.project(points[:, 0], points[:, 1], np.full(len(points), z)),
                  role, shade, grain)
        self.parts += 1

    def cylinder(self, cx: float, cz: float, y0: float, y1: float, r0: float, r1: float,
                 role: int = Role.MAIN, shade: float = 1.0, grain: int = 1) -> None:
        """A vertical frustum of radii ``r0`` (bottom, y0) and ``r1`` (top, y1)."""
        self.depth = max(self.depth, cz + max(r0, r1))
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        bottom = self.project(cx + r0 * np.cos(t), np.full_like(t, y0), cz - r0 * np.sin(t))
        top = self.project(cx + r1 * np.cos(t), np.full_like(t, y1), cz - r1 * np.sin(t))
        self._add(_convex_hull(np.concatenate([bottom, top])), role, shade, grain)
        self._add(top, role, 1.15 * shade)
        self.parts += 1

    def ellipsoid(self, cx: float, cy: float, cz: float, rx: float, ry: float,
                  role: int, shade: float = 1.0) -> None:
        """A rounded blob (cushion, pillow, lamp base): an ellipse facing the viewer."""
        self.depth = max(self.depth, cz)
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        rim = self.project(cx + rx * np.cos(t), cy + ry * np.sin(t), np.full_like(t, cz))
        self._add(rim, role, shade)
        core = self.project(cx - 0.15 * rx + 0.6 * rx * np.cos(t),
                            cy + 0.15 * ry + 0.6 * ry * np.sin(t), np.full_like(t, cz))
        self._add(core, role, 1.1 * shade)
        self.parts += 1


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """The outline of a frustum: hull of its two rim ellipses."""
    return cv2.convexHull(points.astype(np.float32))[:, 0].astype(np.float64)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _legs(sk: Sketch, x0: float, x1: float, z0: float, z1: float,
          height: float, thick: float, role: int, front: bool) -> None:
    """Two legs (the back pair or the front pair) at the corners of a rectangle."""
    z = (z0, z0 + thick) if front else (z1 - thick, z1)
    for x in (x0, x1 - thick):
        sk.box(x, x + thick, 0.0, height, *z, role=role, grain=1)


def draw_chair(sk: Sketch, rng: np.random.Generator) -> None:
    width, depth = _u(rng, 0.8, 1.0), _u(rng, 0.8, 1.0)
    seat_y, seat_t = _u(rng, 0.85, 1.05), _u(rng, 0.06, 0.1)
    leg = _u(rng, 0.06, 0.09)
    back_top = seat_y + _u(rng, 0.75, 1.1)
    style = rng.integers(3)
    # Back legs rise into the back posts.
    for x in (0.0, width - leg):
        sk.box(x, x + leg, 0.0, back_top, depth - leg, depth, grain=1)
    sk.box(0.0, width, seat_y - seat_t, seat_y, 0.0, depth)
    z0, z1 = depth - leg, depth - 0.6 * leg
    if style == 0:  # solid panel
        sk.box(leg, width - leg, seat_y + _u(rng, 0.1, 0.3), back_top - 0.02, z0, z1, grain=1)
    elif style == 1:  # vertical slats under a top rail
        rail = _u(rng, 0.1, 0.18)
        sk.box(leg, width - leg, back_top - rail, back_top, z0, z1)
        n = int(rng.integers(2, 5))
        slat = (width - 2 * leg) / (2 * n + 1)
        for i in range(n):
            x = leg + (2 * i + 1) * slat
            sk.box(x, x + slat, seat_y, back_top - rail, z0, z1, grain=1)
    else:  # ladder: horizontal rails
        n = int(rng.integers(2, 4))
        rail = _u(rng, 0.06, 0.1)
        for i in range(n):
            y = back_top - rail - i * (back_top - seat_y - 0.15) / n
            sk.box(leg, width - leg, y, y + rail, z0, z1)
    _legs(sk, 0.0, width, 0.0, depth, seat_y - seat_t, leg, Role.MAIN, front=True)


def _upholstered(sk: Sketch, rng: np.random.Generator, width: float, cushions: int,
                 back_height: tuple[float, float]) -> None:
    """An armchair or sofa: legs, back, seat block, cushions and two arms."""
    depth = _u(rng, 0.85, 1.05)
    leg_h = _u(rng, 0.04, 0.18)
    base_top = leg_h + _u(rng, 0.25, 0.35)
    top = base_top + _u(rng, *back_height)
    arm_w = _u(rng, 0.14, 0.24)
    arm_top = base_top + _u(rng, 0.22, 0.36)
    back_t = _u(rng, 0.18, 0.28)
    leg = 0.07
    _legs(sk, 0.05, width - 0.05, 0.05, depth - 0.05, leg_h, leg, Role.TRIM, front=False)
    sk.box(0.0, width, leg_h, top, depth - back_t, depth)
    sk.box(arm_w, width - arm_w, leg_h, base_top, 0.0, depth - back_t)
    inner = (width - 2 * arm_w) / cushions
    cushion_t = _u(rng, 0.1, 0.16)
    for i in range(cushions):  # back cushions, then seat cushions
        x = arm_w + i * inner
        sk.box(x + 0.01, x + inner - 0.01, base_top + cushion_t, top - _u(rng, 0.02, 0.08),
               depth - back_t - 0.15, depth - back_t, shade=0.95)
    for i in range(cushions):
        x = arm_w + i * inner
        sk.box(x + 0.01, x + inner - 0.01, base_top, base_top + cushion_t,
               0.0, depth - back_t - 0.15, shade=1.02)
    for x in (0.0, width - arm_w):
        sk.box(x, x + arm_w, leg_h, arm_top, 0.0, depth)
    _legs(sk, 0.05, width - 0.05, 0.05, depth - 0.05, leg_h, leg, Role.TRIM, front=True)


def draw_armchair(sk: Sketch, rng: np.random.Generator) -> None:
    _upholstered(sk, rng, _u(rng, 1.0, 1.3), 1, (0.55, 0.8))


def draw_sofa(sk: Sketch, rng: np.random.Generator) -> None:
    cushions = int(rng.integers(2, 4))
    _upholstered(sk, rng, _u(rng, 0.75, 0.95) * cushions + 0.4, cushions, (0.4, 0.6))


def draw_table(sk: Sketch, rng: np.random.Generator) -> None:
    height, top_t = _u(rng, 0.7, 0.85), _u(rng, 0.04, 0.08)
    if rng.random() < 0.3:  # pedestal table with a round top
        radius = _u(rng, 0.5, 0.75)
        sk.cylinder(radius, radius, 0.0, 0.04, 0.3, 0.28)
        sk.cylinder(radius, radius, 0.04, height - top_t, 0.06, 0.05)
        sk.cylinder(radius, radius, height - top_t, height, radius, radius)
        return
    width, depth = _u(rng, 1.4, 2.1), _u(rng, 0.7, 1.0)
    leg = _u(rng, 0.05, 0.09)
    inset = _u(rng, 0.0, 0.12)
    apron = _u(rng, 0.0, 0.12)
    _legs(sk, inset, width - inset, inset, depth - inset, height - top_t, leg,
          Role.MAIN, front=False)
    _legs(sk, inset, width - inset, inset, depth - inset, height - top_t, leg,
          Role.MAIN, front=True)
    if apron > 0.03:
        sk.box(inset, width - inset, height - top_t - apron, height - top_t, inset,
               depth - inset, shade=0.9)
    sk.box(0.0, width, height - top_t, height, 0.0, depth)


def draw_bed(sk: Sketch, rng: np.random.Generator) -> None:
    width, length = _u(rng, 1.4, 2.0), _u(rng, 1.9, 2.2)
    frame_top = _u(rng, 0.25, 0.4)
    mattress_top = frame_top + _u(rng, 0.15, 0.25)
    head = mattress_top + _u(rng, 0.45, 0.8)
    sk.box(-0.04, width + 0.04, 0.0, head, length, length + 0.08, grain=1)
    sk.box(0.0, width, 0.03, frame_top, 0.0, length, role=Role.TRIM)
    sk.box(0.02, width - 0.02, frame_top, mattress_top, 0.02, length, role=Role.SOFT)
    pillows = 2 if width > 1.55 else 1
    pw = (width - 0.1) / pillows
    for i in range(pillows):
        cx = 0.05 + (i + 0.5) * pw
        sk.ellipsoid(cx, mattress_top + 0.09, length - 0.3, 0.45 * pw, 0.13, Role.SOFT)
    cover = _u(rng, 0.6, 0.75) * length
    sk.box(-0.02, width + 0.02, frame_top - 0.05, mattress_top + 0.03, 0.0, cover)
    if rng.random() < 0.5:
        sk.box(-0.04, width + 0.04, 0.0, frame_top + _u(rng, 0.1, 0.3), -0.08, 0.0, grain=1)


def draw_wardrobe(sk: Sketch, rng: np.random.Generator) -> None:
    width, depth, height = _u(rng, 0.9, 1.6), _u(rng, 0.5, 0.65), _u(rng, 1.8, 2.3)
    plinth = _u(rng, 0.04, 0.12)
    sk.box(0.03, width - 0.03, 0.0, plinth, 0.03, depth, role=Role.TRIM)
    sk.box(0.0, width, plinth, height - 0.06, 0.0, depth, grain=1)
    sk.box(-0.03, width + 0.03, height - 0.06, height, -0.03, depth + 0.03)
    doors = int(rng.integers(2, 4)) if width > 1.2 else 2
    gap = 0.012
    door_w = (width - 0.06) / doors
    for i in range(doors):
        x = 0.03 + i * door_w
        sk.flat([(x + gap, plinth + 0.03), (x + door_w - gap, plinth + 0.03),
                 (x + door_w - gap, height - 0.1), (x + gap, height - 0.1)], -0.005,
                shade=0.93 + 0.1 * (i % 2), grain=1)
        hx = x + (door_w - 0.08 if i % 2 == 0 else 0.05)
        hy = _u(rng, 0.45, 0.55) * height
        sk.flat([(hx, hy), (hx + 0.025, hy), (hx + 0.025, hy + 0.2), (hx, hy + 0.2)], -0.01,
                role=Role.TRIM, shade=0.6)


def draw_bookcase(sk: Sketch, rng: np.random.Generator) -> None:
    width, depth, height = _u(rng, 0.8, 1.4), _u(rng, 0.3, 0.4), _u(rng, 1.3, 2.1)
    board = _u(rng, 0.04, 0.06)
    shelves = int(rng.integers(3, 6))
    sk.flat([(0, 0), (width, 0), (width, height), (0, height)], depth, role=Role.INNER,
            shade=0.55, grain=1)
    far, near = (0.0, width - board) if sk.kx > 0 else (width - board, 0.0)
    sk.box(far, far + board, 0.0, height, 0.0, depth, grain=1)
    gap = (height - board) / shelves
    for level in range(shelves):
        y = level * gap
        sk.box(board, width - board, y, y + board, 0.0, depth)
        x = board + _u(rng, 0.0, 0.1)
        while x < width - board - 0.04:
            book_w = min(_u(rng, 0.03, 0.08), width - board - x)
            if rng.random() < 0.1:  # a gap between books
                x += book_w
                continue
            book_h = _u(rng, 0.55, 0.9) * (gap - board)
            sk.box(x, x + book_w, y + board, y + board + book_h, _u(rng, 0.02, 0.08),
                   0.8 * depth, role=Role.BOOK)
            x += book_w
    sk.box(0.0, width, height - board, height, 0.0, depth)
    sk.box(near, near + board, 0.0, height, 0.0, depth, grain=1)


def draw_lamp(sk: Sketch, rng: np.random.Generator) -> None:
    if rng.random() < 0.6:  # floor lamp: disc base, pole, shade
        height = _u(rng, 1.4, 1.8)
        r_bottom = _u(rng, 0.2, 0.3)
        shade_h = _u(rng, 0.25, 0.4)
        sk.cylinder(0.0, 0.2, 0.0, _u(rng, 0.03, 0.06), _u(rng, 0.16, 0.24), 0.15, shade=0.8)
        sk.cylinder(0.0, 0.2, 0.03, height - shade_h + 0.05, 0.018, 0.018, role=Role.TRIM)
    else:  # table lamp: round body, short neck, big shade
        height = _u(rng, 0.55, 0.8)
        r_bottom = _u(rng, 0.2, 0.28)
        shade_h = _u(rng, 0.2, 0.3)
        body = _u(rng, 0.1, 0.16)
        sk.ellipsoid(0.0, body, 0.2, body * _u(rng, 0.7, 1.0), body, Role.MAIN, shade=0.9)
        sk.cylinder(0.0, 0.2, 2 * body - 0.02, height - shade_h + 0.03, 0.02, 0.02,
                    role=Role.TRIM)
    sk.cylinder(0.0, 0.2, height - shade_h, height, r_bottom, r_bottom * _u(rng, 0.5, 0.8),
                shade=1.05)


DrawFn = Callable[[Sketch, np.random.Generator], None]

DRAWINGS: dict[str, DrawFn] = {
    "chair": draw_chair,
    "armchair": draw_armchair,
    "sofa": draw_sofa,
    "table": draw_table,
    "bed": draw_bed,
    "wardrobe": draw_wardrobe,
    "bookcase": draw_bookcase,
    "lamp": draw_lamp,
}
CLASSES: tuple[str, ...] = tuple(DRAWINGS)

# The material each class usually has (used with probability ``texture_correlation``).
TYPICAL_MATERIALS: dict[str, tuple[str, ...]] = {
    "chair": ("wood",),
    "armchair": ("fabric",),
    "sofa": ("leather",),
    "table": ("marble",),
    "bed": ("plaid",),
    "wardrobe": ("wicker",),
    "bookcase": ("gravel",),
    "lamp": ("metal",),
}
