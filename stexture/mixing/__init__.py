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

The package is three modules: :mod:`.settings` (:class:`MixConfig`, the settings of a
mix, checked once), :mod:`.composition` (:class:`MixPlan`, :func:`compose`,
:func:`compose_normalized`, :func:`soft_targets`) and :mod:`.mixer`
(:class:`CueConflictMix`). Every public name is re-exported here.
"""

from .composition import MixPlan, compose, compose_normalized, soft_targets
from .mixer import CueConflictMix
from .settings import MODES, PAIRINGS, TEXTURE_LAYOUTS, MixConfig, mix_config

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
