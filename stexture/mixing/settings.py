"""The settings of a mix: :class:`MixConfig`, checked once when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODES", "PAIRINGS", "TEXTURE_LAYOUTS", "MixConfig", "check_unit_interval",
           "mix_config"]

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
