"""Cue-conflict mixing: the structure of one image with the texture of another, soft labels.

A cue-conflict sample joins the structure layer ``s_a`` of image *a* with the texture layer
``t_b`` of image *b* and is labelled with both classes,

    x = clip(s_a + (1 - alpha) * t_a + alpha * texture_scale * P(t_b), 0, 1),
    y = k * onehot(c_a) + (1 - k) * onehot(c_b),

optionally label-smoothed as in timm, ``y <- y * (1 - ls) + ls / C``. ``alpha`` is the share
of the texture that is transferred (1: all of it, ``s_a + t_b``; Li et al. transfer feature
statistics partially with ``alpha = 0.5``), and ``P`` the donor texture's layout:
``"aligned"`` (as in *b*) or ``"shuffled"`` (rearranged in square tiles, so that the
composite carries *b*'s texture statistics but not the places of *b*'s edges and seams).
With ``k = 1`` the target names the structure (shape) class only, with ``k = 0`` the
texture class only. The soft-target cross-entropy ``-sum_c y_c log p_c`` equals
``k * CE(c_a) + (1 - k) * CE(c_b)``, the loss of Li et al., "Shape-Texture Debiased Neural
Network Training", ICLR 2021 (their ``gamma`` is ``k``).

A batch is mixed in one of two modes: ``"replace"`` turns a fraction ``p_conflict`` of the
batch into composites (the batch keeps its size), ``"add"`` keeps every original and appends
``round(p_conflict * B)`` composites after them, as Li et al. do (their batch doubles at
``p_conflict = 1``).

The composition exists twice, side by side, as timm's ``Mixup`` holds its float and uint8
paths: :func:`compose` on float tensors (any device; the definition), and
:func:`compose_normalized` on the 8-bit layers of a CPU batch, which composes, normalises and
transposes to ``B x C x H x W`` in one pass (what the loader's workers run). Both take the
same :class:`MixPlan`; a test holds them equal.

:class:`CueConflictMix` follows the conventions of timm's ``Mixup`` and torchvision's
``v2.MixUp`` (``num_classes``, ``label_smoothing``, a callable returning ``(x, y)``), so its
targets go straight into ``nn.CrossEntropyLoss`` (probability targets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from numba import njit

__all__ = [
    "MODES",
    "PAIRINGS",
    "TEXTURE_LAYOUTS",
    "CueConflictMix",
    "MixConfig",
    "MixPlan",
    "compose",
    "compose_normalized",
    "mix_config",
    "soft_targets",
]

PAIRINGS = ("different-class", "random")
MODES = ("replace", "add")
TEXTURE_LAYOUTS = ("aligned", "shuffled")


def check_unit_interval(name: str, value: float, *, closed_right: bool = True) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` when it is outside [0, 1]
    (or [0, 1) with ``closed_right=False``)."""
    value = float(value)
    upper_ok = value <= 1.0 if closed_right else value < 1.0
    if not (value >= 0.0 and upper_ok):  # also rejects NaN
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def soft_targets(
    structure_cls: torch.Tensor,
    texture_cls: torch.Tensor,
    k: float,
    num_classes: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Soft targets ``k * onehot(structure_cls) + (1 - k) * onehot(texture_cls)``, smoothed.

    Rows where the two classes coincide are one-hot. Returns float32 ``B x num_classes`` on the
    labels' device; every row sums to 1.
    """
    a = torch.nn.functional.one_hot(structure_cls, num_classes).float()
    b = torch.nn.functional.one_hot(texture_cls, num_classes).float()
    y = k * a + (1.0 - k) * b
    if label_smoothing > 0.0:
        y = y * (1.0 - label_smoothing) + label_smoothing / num_classes
    return y


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MixPlan:
    """Which samples of a batch make each output row: the random part of mixing.

    Row ``r`` of the mixed batch takes its structure (and, as an original, its own texture)
    from sample ``structure_index[r]`` and, as a composite (``is_conflict[r]``), the texture
    of sample ``texture_index[r]``, laid out by ``tiles[r]``: tile ``j`` of the row's texture
    (row-major over a grid of ``tile_size`` squares) is tile ``tiles[r, j]`` of the donor's.
    ``tiles`` is ``None`` for the aligned layout; pixels past the last whole tile keep their
    place. Originals have ``texture_index[r] == structure_index[r]`` and identity tiles.
    """

    structure_index: torch.Tensor  # int64 (R,)
    texture_index: torch.Tensor  # int64 (R,)
    is_conflict: torch.Tensor  # bool (R,)
    tiles: torch.Tensor | None = None  # int64 (R, tiles per image)
    tile_size: int = 0

    def __len__(self) -> int:
        return int(self.structure_index.shape[0])

    def needs_structure(self) -> set[int]:
        """Samples whose structure layer the plan uses: those of every composite and its donor
        (an original needs only its image)."""
        rows = self.is_conflict
        return set(self.structure_index[rows].tolist()) | set(self.texture_index[rows].tolist())


def _donor_pixel_map(plan: MixPlan, height: int, width: int) -> torch.Tensor | None:
    """Per row, the flat donor pixel index of each output pixel (``None``: aligned)."""
    if plan.tiles is None:
        return None
    t = plan.tile_size
    ny, nx = height // t, width // t
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    inside = (ys < ny * t) & (xs < nx * t)
    tile_of = torch.where(inside, (ys // t) * nx + xs // t, 0)
    source_tile = plan.tiles[:, tile_of]  # R x H x W
    sy = torch.where(inside, (source_tile // nx) * t + ys % t, ys)
    sx = torch.where(inside, (source_tile % nx) * t + xs % t, xs)
    return (sy * width + sx).reshape(len(plan), -1)


def _laid_out(texture: torch.Tensor, pixel_map: torch.Tensor | None) -> torch.Tensor:
    if pixel_map is None:
        return texture
    rows, channels = texture.shape[:2]
    flat = texture.reshape(rows, channels, -1)
    index = pixel_map.to(texture.device)[:, None, :].expand(rows, channels, -1)
    return torch.gather(flat, 2, index).reshape(texture.shape)


# --------------------------------------------------------------------------- composition


def compose(structure: torch.Tensor, texture: torch.Tensor, plan: MixPlan, *,
            alpha: float = 1.0, texture_scale: float = 1.0) -> torch.Tensor:
    """The mixed batch ``x`` in [0, 1] for ``plan`` (float path, any device).

    ``x[r] = clip(s_a + (1 - alpha) t_a + alpha * texture_scale * P(t_b), 0, 1)`` for a
    composite (``a = structure_index[r]``, ``b = texture_index[r]``, ``P`` the tile layout)
    and ``clip(s_a + t_a, 0, 1)`` for an original; ``structure`` and ``texture`` are float
    ``B x C x H x W`` (texture in [-1, 1]).
    """
    device = structure.device
    a = plan.structure_index.to(device)
    s_a, t_a = structure[a], texture[a]
    t_b = _laid_out(texture[plan.texture_index.to(device)],
                    _donor_pixel_map(plan, *structure.shape[2:]))
    mixed = s_a + (1.0 - alpha) * t_a + (alpha * texture_scale) * t_b
    conflict = plan.is_conflict.to(device)[:, None, None, None]
    return torch.where(conflict, mixed, s_a + t_a).clamp_(0.0, 1.0)


@njit(cache=True)
def _compose_normalized_kernel(images, structures, structure_index, texture_index, is_conflict,
                               tiles, tile_size, own_weight, donor_weight, scale, shift):
    rows = structure_index.shape[0]
    _, height, width, channels = images.shape
    out = np.empty((rows, channels, height, width), np.float32)
    nx = width // tile_size if tile_size > 0 else 0
    ny = height // tile_size if tile_size > 0 else 0
    for r in range(rows):
        a = structure_index[r]
        b = texture_index[r]
        for y in range(height):
            for x in range(width):
                sy, sx = y, x
                if is_conflict[r] and tile_size > 0 and y < ny * tile_size and x < nx * tile_size:
                    src = tiles[r, (y // tile_size) * nx + x // tile_size]
                    sy = (src // nx) * tile_size + y % tile_size
                    sx = (src % nx) * tile_size + x % tile_size
                for c in range(channels):
                    if is_conflict[r]:
                        s = np.float32(structures[a, y, x, c])
                        t_a = np.float32(images[a, y, x, c]) - s
                        t_b = (np.float32(images[b, sy, sx, c])
                               - np.float32(structures[b, sy, sx, c]))
                        v = s + own_weight * t_a + donor_weight * t_b
                        v = min(max(v, np.float32(0.0)), np.float32(255.0))
                    else:
                        v = np.float32(images[a, y, x, c])
                    out[r, c, y, x] = v * scale[c] + shift[c]
    return out


def compose_normalized(images: np.ndarray, structures: np.ndarray, plan: MixPlan, *,
                       alpha: float = 1.0, texture_scale: float = 1.0,
                       scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """:func:`compose` on uint8 ``B x H x W x C`` layers, normalised: float32 ``R x C x H x W``
    with ``x[r, c] = scale[c] * (255 * compose(...)[r, c]) + shift[c]``.

    The CPU fast path of the loader: composing, normalising and the HWC -> CHW transpose in
    one pass, several times cheaper than the tensor ops. With ``alpha = texture_scale = 1`` a
    composite is the exact integer ``clip(s_a + i_b - s_b, 0, 255)`` before scaling.
    ``structures`` rows that no composite uses may hold anything.
    """
    tiles = np.zeros((len(plan), 1), np.int64) if plan.tiles is None else plan.tiles.numpy()
    return _compose_normalized_kernel(
        np.ascontiguousarray(images), np.ascontiguousarray(structures),
        plan.structure_index.numpy(), plan.texture_index.numpy(), plan.is_conflict.numpy(),
        np.ascontiguousarray(tiles), plan.tile_size if plan.tiles is not None else 0,
        np.float32(1.0 - alpha), np.float32(alpha * texture_scale),
        np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(shift, np.float32))


def _check_batch(structure: torch.Tensor, texture: torch.Tensor, labels: torch.Tensor,
                 num_classes: int) -> None:
    if structure.ndim != 4 or structure.shape[1] != 3:
        raise ValueError(f"structure must be B x 3 x H x W, got shape {tuple(structure.shape)}")
    if texture.shape != structure.shape:
        raise ValueError(
            f"texture shape {tuple(texture.shape)} differs from structure "
            f"shape {tuple(structure.shape)}"
        )
    if not (structure.is_floating_point() and texture.is_floating_point()):
        raise ValueError(
            f"structure and texture must be float tensors, got {structure.dtype} and "
            f"{texture.dtype} (divide uint8 layers by 255)"
        )
    if labels.shape != (structure.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(
            f"labels must be int64 of shape ({structure.shape[0]},), got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )


# --------------------------------------------------------------------------- the mixer


def _setting(default: Any, help: str, **cli: Any) -> Any:
    """A field with its command-line help (``stexture sweep`` makes its options from them)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class MixConfig:
    """How a batch is mixed: every setting of :class:`CueConflictMix` but the number of
    classes and ``k``, checked once, when it is made (a ``ValueError`` names the setting).

    :class:`CueConflictMix`, :func:`stexture.make_loader` (``mix=``) and the sweep's
    :class:`~stexture.training.config.SweepConfig` take it; the sweep's command-line options
    for these settings are made from the fields' metadata (``help``, ``choices``).

    Parameters
    ----------
    p_conflict : float in [0, 1]
        Composites per batch of ``B`` samples, as a fraction of ``B``. The count is
        ``floor(p * B)`` or ``ceil(p * B)``, the latter with probability
        ``p * B - floor(p * B)`` (stochastic rounding): within one of ``p * B`` and exactly
        ``p`` in expectation whatever the batch size. Which samples give their structure is
        drawn uniformly, without repetition.
    pairing : {"different-class", "random"}
        How a composite's texture donor is drawn from the batch. "different-class":
        uniformly among the samples of another class whenever the batch has one; otherwise
        (a batch of one class) among the other samples, and such a pair is counted in
        :attr:`CueConflictMix.same_class_pairs`. "random": uniformly among the other
        samples, whatever their class. In both, donors are drawn among the batch's other
        structure-giving samples when one qualifies, and among all its samples only when
        none does: that set is a uniform draw, so every qualifying sample is equally likely
        to be a donor either way, and a loader decodes the structure layer of only about
        ``p * B`` samples.
    texture_scale : float >= 0
        Factor on the donor's texture in a composite (1 = as decomposed).
    label_smoothing : float in [0, 1)
        timm-style smoothing of every target row: ``y * (1 - ls) + ls / C``.
    mode : {"replace", "add"}
        "replace": the chosen samples become composites, the batch keeps ``B`` rows.
        "add": all ``B`` originals stay (one-hot), the composites are appended after them
        (``B + round(p * B)`` rows), as in Li et al.
    alpha : float in [0, 1]
        Share of the texture transferred: a composite is ``s_a + (1 - alpha) t_a +
        alpha t_b``; 1 swaps the texture whole.
    texture_layout : {"aligned", "shuffled"}
        "shuffled" rearranges the donor's texture in tiles of ``tile_size`` pixels (a uniform
        permutation per composite), removing the donor's silhouette from the composite.
    tile_size : int >= 1
        Side of the tiles of the shuffled layout, in pixels of the mixed images.
    """

    p_conflict: float = _setting(0.5, "share of each batch that is cue-conflict")
    pairing: str = _setting(
        "different-class", "how a composite's texture donor is drawn from the batch: of "
        "another class whenever the batch has one, or any other image", choices=PAIRINGS)
    texture_scale: float = _setting(1.0, "factor on the donor's texture in a composite")
    label_smoothing: float = _setting(
        0.0, "eps: each target becomes (1 - eps) * y + eps / classes")
    mode: str = _setting(
        "replace", "replace: a share of each batch becomes composites; add: keep every "
        "original and append the composites (Li et al.; the batch grows)", choices=MODES)
    alpha: float = _setting(1.0, "share of the donor's texture in a composite, in [0, 1]")
    texture_layout: str = _setting(
        "aligned", "shuffled: rearrange the donor's texture in tiles so it carries no shape "
        "of the donor", choices=TEXTURE_LAYOUTS)
    tile_size: int = _setting(16, "tile side in pixels for --texture-layout shuffled")

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"unknown pairing {self.pairing!r}; expected one of "
                             f"{', '.join(PAIRINGS)}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.texture_layout not in TEXTURE_LAYOUTS:
            raise ValueError(f"unknown texture_layout {self.texture_layout!r}; expected one of "
                             f"{', '.join(TEXTURE_LAYOUTS)}")
        if not math.isfinite(self.texture_scale) or self.texture_scale < 0:
            raise ValueError(f"texture_scale must be finite and >= 0, got {self.texture_scale}")
        if int(self.tile_size) != self.tile_size or self.tile_size < 1:
            raise ValueError(f"tile_size must be an integer >= 1, got {self.tile_size}")
        # normalised so that equal settings compare equal, whatever number types they came in
        for name, value in (
                ("p_conflict", check_unit_interval("p_conflict", self.p_conflict)),
                ("label_smoothing", check_unit_interval(
                    "label_smoothing", self.label_smoothing, closed_right=False)),
                ("alpha", check_unit_interval("alpha", self.alpha)),
                ("tile_size", int(self.tile_size)),
                ("texture_scale", float(self.texture_scale))):
            object.__setattr__(self, name, value)


def mix_config(mix: MixConfig | None, **keywords: Any) -> MixConfig:
    """``mix``, or the :class:`MixConfig` of ``keywords`` (its fields) when it is ``None``:
    how a function that takes both (:func:`stexture.make_loader`) makes its one config. A
    ``ValueError`` names the keywords set away from their defaults beside a ``mix``."""
    if mix is None:
        return MixConfig(**keywords)
    if not isinstance(mix, MixConfig):
        raise ValueError(f"mix must be a MixConfig, got {type(mix).__name__}")
    defaults = MixConfig()
    both = [name for name, value in keywords.items() if value != getattr(defaults, name)]
    if both:
        raise ValueError(f"give the mixing settings in mix= or as keywords, not both: "
                         f"{', '.join(both)} set beside mix=")
    return mix

class CueConflictMix:
    """Mix a batch with cue-conflict composites and soft labels.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C`` (at least 2).
    k : float in [0, 1]
        Weight of the structure class in a cue-conflict target (1 - k goes to the texture
        class).
    config : MixConfig, optional
        How the batch is mixed (the defaults of :class:`MixConfig` when not given).
    generator : torch.Generator, optional
        CPU generator for every random draw; the draws do not depend on the tensors' device,
        so a seeded generator gives the same batches on CPU and CUDA. ``None`` uses torch's
        global RNG.
    **settings
        Fields of :class:`MixConfig` (``p_conflict``, ``mode``, ...), which replace those of
        ``config``: ``CueConflictMix(10, 0.8, mode="add")``.

    Attributes
    ----------
    config : MixConfig
        The settings; each is also an attribute of its own (``mix.p_conflict``).
    conflict_pairs : int
        Composites made so far.
    same_class_pairs : int
        Of those, how many got a donor of their own class (one-hot targets).

    Examples
    --------
    >>> mix = CueConflictMix(num_classes=10, k=0.8)
    >>> x, y = mix(structure, texture, labels)  # doctest: +SKIP
    >>> loss = torch.nn.functional.cross_entropy(model(x), y)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_classes: int,
        k: float,
        config: MixConfig | None = None,
        generator: torch.Generator | None = None,
        **settings: Any,
    ) -> None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        config = config if config is not None else MixConfig()
        self.config = replace(config, **settings) if settings else config
        self.num_classes = int(num_classes)
        self.k = check_unit_interval("k", k)
        for setting in fields(MixConfig):
            setattr(self, setting.name, getattr(self.config, setting.name))
        self.generator = generator
        self.conflict_pairs = 0
        self.same_class_pairs = 0

    def __repr__(self) -> str:
        settings = ", ".join(f"{setting.name}={getattr(self.config, setting.name)!r}"
                             for setting in fields(MixConfig))
        return f"{type(self).__name__}(num_classes={self.num_classes}, k={self.k}, {settings})"

    def _conflict_count(self, batch: int) -> int:
        expected = round(self.p_conflict * batch, 9)  # 0.3 * 10 is 3.0000000000000004
        count = math.floor(expected)
        if expected > count and torch.rand((), generator=self.generator).item() < expected - count:
            count += 1
        return count

    def _draw_donors(self, labels: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """For each chosen sample, the batch index of its texture donor (never itself when the
        batch has another sample), by the preferences documented under ``pairing``."""
        batch = labels.shape[0]
        others = torch.ones(len(chosen), batch, dtype=torch.bool)
        others[torch.arange(len(chosen)), chosen] = batch == 1
        in_conflict = torch.zeros(batch, dtype=torch.bool)
        in_conflict[chosen] = True
        preferences = [others & in_conflict, others]
        if self.pairing == "different-class":
            differs = labels[chosen][:, None] != labels[None, :]
            preferences = [differs & in_conflict, differs, *preferences]
        # each row takes the first preference that has a candidate
        allowed = preferences[-1]
        for candidates in reversed(preferences[:-1]):
            allowed = torch.where(candidates.any(dim=1, keepdim=True), candidates, allowed)
        scores = torch.rand(len(chosen), batch, generator=self.generator)
        return torch.where(allowed, scores, -1.0).argmax(dim=1)

    def _draw_tiles(self, rows: torch.Tensor, image_size: tuple[int, int] | None
                    ) -> torch.Tensor | None:
        if self.texture_layout == "aligned":
            return None
        if image_size is None:
            raise ValueError("texture_layout='shuffled' needs the image size to draw tiles")
        count = (image_size[0] // self.tile_size) * (image_size[1] // self.tile_size)
        if count < 2:
            raise ValueError(f"tile_size={self.tile_size} leaves fewer than 2 tiles in a "
                             f"{image_size[0]}x{image_size[1]} image")
        tiles = torch.arange(count).repeat(len(rows), 1)
        for r in torch.nonzero(rows).flatten().tolist():
            tiles[r] = torch.randperm(count, generator=self.generator)
        return tiles

    def draw(self, labels: torch.Tensor, image_size: tuple[int, int] | None = None) -> MixPlan:
        """The random part of mixing a batch with these ``labels``, on the CPU.

        A loader draws the plan before decoding and decodes the structure layer only of the
        samples in :meth:`MixPlan.needs_structure`, then composes. ``image_size`` (height,
        width) is needed by the shuffled layout.
        """
        labels = labels.cpu()
        batch = labels.shape[0]
        count = self._conflict_count(batch)
        chosen = torch.randperm(batch, generator=self.generator)[:count]
        if self.mode == "add":
            chosen = chosen.sort().values  # composites follow the originals in batch order
        donors = self._draw_donors(labels, chosen) if count else chosen
        if self.mode == "replace":
            structure_index = torch.arange(batch)
            texture_index = torch.arange(batch)
            texture_index[chosen] = donors
            is_conflict = torch.zeros(batch, dtype=torch.bool)
            is_conflict[chosen] = True
        else:
            structure_index = torch.cat([torch.arange(batch), chosen])
            texture_index = torch.cat([torch.arange(batch), donors])
            is_conflict = torch.arange(batch + count) >= batch
        return MixPlan(structure_index, texture_index, is_conflict,
                       self._draw_tiles(is_conflict, image_size), self.tile_size)

    def __call__(
        self,
        structure: torch.Tensor,
        texture: torch.Tensor,
        labels: torch.Tensor,
        return_info: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]:
        """Mix a batch.

        Parameters
        ----------
        structure : float tensor B x 3 x H x W in [0, 1]
        texture : float tensor B x 3 x H x W in [-1, 1], same device
        labels : int64 tensor B, the class of each sample
        return_info : bool
            Also return ``info``: ``structure_cls``, ``texture_cls`` (int64 R),
            ``is_conflict`` (bool R), ``structure_index`` and ``texture_index`` (int64 R,
            the samples of the batch each row comes from).

        Returns
        -------
        x : float tensor R x 3 x H x W in [0, 1] (R = B in "replace" mode)
        y : float32 tensor R x C, rows summing to 1
        info : dict, only with ``return_info=True``
        """
        plan = self.draw(labels, tuple(structure.shape[2:]))
        return self.apply(structure, texture, labels, plan, return_info)

    def apply(
        self,
        structure: torch.Tensor,
        texture: torch.Tensor,
        labels: torch.Tensor,
        plan: MixPlan,
        return_info: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]:
        """The deterministic part of a call: compose and label the batch for a plan from
        :meth:`draw`. Arguments and results as in :meth:`__call__`."""
        _check_batch(structure, texture, labels, self.num_classes)
        x = compose(structure, texture, plan, alpha=self.alpha, texture_scale=self.texture_scale)
        y, info = self.targets(labels, plan)
        return (x, y, info) if return_info else (x, y)

    def targets(self, labels: torch.Tensor, plan: MixPlan
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Soft targets and ``info`` of a planned batch (on the labels' device), counting the
        pairs: the labelling half of :meth:`apply`, for callers that compose themselves."""
        device = labels.device
        structure_index = plan.structure_index.to(device)
        texture_index = plan.texture_index.to(device)
        is_conflict = plan.is_conflict.to(device)
        structure_cls, texture_cls = labels[structure_index], labels[texture_index]
        self.conflict_pairs += int(is_conflict.sum())
        self.same_class_pairs += int((texture_cls == structure_cls)[is_conflict].sum())
        y = soft_targets(structure_cls, texture_cls, self.k, self.num_classes,
                         self.label_smoothing)
        info = {
            "structure_cls": structure_cls,
            "texture_cls": texture_cls,
            "is_conflict": is_conflict,
            "structure_index": structure_index,
            "texture_index": texture_index,
        }
        return y, info
