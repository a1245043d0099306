"""Cue-conflict mixing: the structure of one image with the texture of another, soft labels.

A cue-conflict sample joins the structure layer of image *a* with the texture layer of image
*b* and is labelled with both classes,

    x = clip(s_a + texture_scale * t_b, 0, 1),
    y = k * onehot(c_a) + (1 - k) * onehot(c_b),

optionally label-smoothed as in timm, ``y <- y * (1 - ls) + ls / C``. With ``k = 1`` the target
names the structure (shape) class only, with ``k = 0`` the texture class only. The soft-target
cross-entropy ``-sum_c y_c log p_c`` equals ``k * CE(c_a) + (1 - k) * CE(c_b)``, the loss of
Li et al., "Shape-Texture Debiased Neural Network Training", ICLR 2021 (their ``gamma`` is
``k``), who mix originals and cue-conflict images 1:1 in a batch (``p_conflict = 0.5``).

:class:`CueConflictMix` follows the conventions of timm's ``Mixup`` and torchvision's
``v2.MixUp`` (``num_classes``, ``label_smoothing``, a callable returning ``(x, y)``), so its
targets go straight into ``nn.CrossEntropyLoss`` (probability targets).
"""

from __future__ import annotations

import math

import torch

__all__ = ["PAIRINGS", "CueConflictMix", "compose", "compose_uint8", "soft_targets"]

PAIRINGS = ("different-class", "random")


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


def compose(structure: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
    """``clip(structure + texture, 0, 1)``: the texture is clipped where the sum would leave
    the image range."""
    return (structure + texture).clamp_(0.0, 1.0)


def compose_uint8(
    structure: torch.Tensor, donor_image: torch.Tensor, donor_structure: torch.Tensor
) -> torch.Tensor:
    """:func:`compose` on 8-bit layers: ``clip(s + (i_b - s_b), 0, 255)`` as uint8, exact.

    Equals ``255 * compose(s / 255, (i_b - s_b) / 255)`` and costs a fraction of the float
    version (int16 arithmetic, no scaling); with ``donor = self`` it returns the image.
    """
    texture = donor_image.to(torch.int16) - donor_structure.to(torch.int16)
    return (structure.to(torch.int16) + texture).clamp_(0, 255).to(torch.uint8)


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


class CueConflictMix:
    """Turn a fraction of a batch into cue-conflict samples with soft labels.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C`` (at least 2).
    k : float in [0, 1]
        Weight of the structure class in a cue-conflict target (1 - k goes to the texture
        class).
    p_conflict : float in [0, 1]
        Fraction of each batch made cue-conflict; the rest stay original images
        (``structure + texture`` of the same sample) with one-hot targets. The count per batch
        of ``B`` samples is ``floor(p * B)`` or ``ceil(p * B)``, the latter with probability
        ``p * B - floor(p * B)`` (stochastic rounding): every batch is within one sample of
        ``p * B`` and the expected fraction is exactly ``p`` whatever the batch size. Which
        samples become cue-conflict is drawn uniformly.
    pairing : {"different-class", "random"}
        How a cue-conflict sample's texture donor is drawn from the batch. "different-class":
        uniformly among the samples of another class whenever the batch has one; otherwise
        (a batch of one class) among the other samples, and such a pair is counted in
        :attr:`same_class_pairs`. "random": uniformly among the other samples, whatever their
        class. In both, donors are drawn among the batch's other *cue-conflict* samples when
        one qualifies, and among all its samples only when none does: the set of cue-conflict
        samples is a uniform draw, so every qualifying sample of the batch is equally likely
        to be a donor either way, and only the cue-conflict samples need a structure layer
        (a loader decodes p_conflict of them, not about 70% at p_conflict = 0.5). A donor
        gives its own original texture even though it is itself cue-conflict.
    texture_scale : float
        Factor on the donor's texture in a cue-conflict sample (1 = as decomposed); originals
        keep their own texture unscaled.
    label_smoothing : float in [0, 1)
        timm-style smoothing of every target row: ``y * (1 - ls) + ls / C``.
    generator : torch.Generator, optional
        CPU generator for every random draw (which samples, which donors, the rounding); the
        draws do not depend on the tensors' device, so a seeded generator gives the same
        batches on CPU and CUDA. ``None`` uses torch's global RNG.

    Attributes
    ----------
    conflict_pairs : int
        Cue-conflict samples made so far.
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
        p_conflict: float = 0.5,
        pairing: str = "different-class",
        texture_scale: float = 1.0,
        label_smoothing: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        if pairing not in PAIRINGS:
            raise ValueError(f"unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
        if not math.isfinite(texture_scale) or texture_scale < 0:
            raise ValueError(f"texture_scale must be finite and >= 0, got {texture_scale}")
        self.num_classes = int(num_classes)
        self.k = check_unit_interval("k", k)
        self.p_conflict = check_unit_interval("p_conflict", p_conflict)
        self.label_smoothing = check_unit_interval(
            "label_smoothing", label_smoothing, closed_right=False
        )
        self.pairing = pairing
        self.texture_scale = float(texture_scale)
        self.generator = generator
        self.conflict_pairs = 0
        self.same_class_pairs = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, k={self.k}, "
            f"p_conflict={self.p_conflict}, pairing={self.pairing!r}, "
            f"texture_scale={self.texture_scale}, label_smoothing={self.label_smoothing})"
        )

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

    def draw(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The random part of a call, on the CPU: ``(texture_index, is_conflict)``.

        ``texture_index[i]`` is the sample whose texture goes into sample ``i`` (``i`` itself
        for an original). A loader can draw the plan before decoding and decode the structure
        layer only of the samples that need it (cue-conflict samples and donors), then call
        :meth:`apply`.
        """
        labels = labels.cpu()
        batch = labels.shape[0]
        count = self._conflict_count(batch)
        chosen = torch.randperm(batch, generator=self.generator)[:count]
        texture_index = torch.arange(batch)
        is_conflict = torch.zeros(batch, dtype=torch.bool)
        if count:
            texture_index[chosen] = self._draw_donors(labels, chosen)
            is_conflict[chosen] = True
        return texture_index, is_conflict

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
            Also return ``info``: ``structure_cls``, ``texture_cls`` (int64 B),
            ``is_conflict`` (bool B) and ``texture_index`` (int64 B, the donor in the batch).

        Returns
        -------
        x : float tensor B x 3 x H x W in [0, 1]
        y : float32 tensor B x C, rows summing to 1
        info : dict, only with ``return_info=True``
        """
        texture_index, is_conflict = self.draw(labels)
        return self.apply(structure, texture, labels, texture_index, is_conflict, return_info)

    def apply(
        self,
        structure: torch.Tensor,
        texture: torch.Tensor,
        labels: torch.Tensor,
        texture_index: torch.Tensor,
        is_conflict: torch.Tensor,
        return_info: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict]:
        """The deterministic part of a call: compose and label the batch for a plan from
        :meth:`draw`. Arguments and results as in :meth:`__call__`."""
        _check_batch(structure, texture, labels, self.num_classes)
        if texture_index.shape != labels.shape or is_conflict.shape != labels.shape:
            raise ValueError("texture_index and is_conflict must have the labels' shape")
        device = structure.device
        texture_index = texture_index.to(device)
        is_conflict = is_conflict.to(device)
        donor_texture = texture[texture_index]
        if self.texture_scale != 1.0:  # originals keep their own texture unscaled
            scale = torch.where(is_conflict, self.texture_scale, 1.0)
            donor_texture = donor_texture * scale.to(device, texture.dtype)[:, None, None, None]
        x = compose(structure, donor_texture)
        y, info = self.targets(labels, texture_index, is_conflict)
        return (x, y, info) if return_info else (x, y)

    def targets(
        self, labels: torch.Tensor, texture_index: torch.Tensor, is_conflict: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Soft targets and ``info`` of a planned batch (all on the labels' device), counting
        the pairs; the labelling half of :meth:`apply`, for callers that compose themselves
        (the loader composes uint8 layers with :func:`compose_uint8`)."""
        texture_index = texture_index.to(labels.device)
        is_conflict = is_conflict.to(labels.device)
        texture_cls = labels[texture_index]
        self.conflict_pairs += int(is_conflict.sum())
        self.same_class_pairs += int((texture_cls == labels)[is_conflict].sum())
        y = soft_targets(labels, texture_cls, self.k, self.num_classes, self.label_smoothing)
        info = {
            "structure_cls": labels,
            "texture_cls": texture_cls,
            "is_conflict": is_conflict,
            "texture_index": texture_index,
        }
        return y, info
