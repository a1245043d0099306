"""The losses of the built-in trainer beyond plain soft-target cross-entropy: distillation.

Hinton et al.'s distillation loss compares a teacher's targets softened at temperature
``tau`` with the student's logits softened alike, scales that term by ``tau^2`` (its
gradients scale as ``1 / tau^2``; the factor keeps its share when ``tau`` changes) and adds
an optional hard term, the cross-entropy with the true classes at temperature 1:

.. math::

    L = (1 - w) \\, \\tau^2 \\, \\mathrm{CE}(p, \\mathrm{softmax}(z / \\tau))
        + w \\, \\mathrm{CE}(\\mathrm{onehot}(c), \\mathrm{softmax}(z))

:func:`stexture.training.fit` uses it when ``TrainConfig.temperature != 1`` or
``TrainConfig.hard_weight > 0``; :mod:`stexture.training.teachers` makes the targets ``p``.

G. Hinton, O. Vinyals, J. Dean, "Distilling the knowledge in a neural network",
arXiv:1503.02531, 2015.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["check_hard_weight", "check_temperature", "distillation_loss"]


def distillation_loss(student_logits: torch.Tensor, soft_targets: torch.Tensor,
                      labels: torch.Tensor | None = None, temperature: float = 1.0,
                      hard_weight: float = 0.0) -> torch.Tensor:
    """Hinton et al.'s distillation loss, the batch mean of
    ``(1 - w) * tau^2 * CE(soft_targets, softmax(z / tau)) + w * CE(onehot(labels), softmax(z))``.

    Parameters
    ----------
    student_logits : tensor B x C
        The student's logits ``z``.
    soft_targets : tensor B x C
        The teachers' targets at temperature ``tau``
        (:func:`stexture.training.teachers.teacher_targets`), rows summing to 1.
    labels : int64 tensor B, optional
        The true classes; needed when ``hard_weight > 0``.
    temperature : float
        ``tau`` > 0, the temperature the targets were softened with.
    hard_weight : float
        ``w`` in [0, 1], the weight of the hard-label term (Hinton et al. found a
        considerably lower weight than the soft term's best).

    Returns
    -------
    tensor
        The scalar loss.
    """
    check_temperature(temperature)
    check_hard_weight(hard_weight)
    if student_logits.shape != soft_targets.shape or student_logits.ndim != 2:
        raise ValueError(f"logits and targets must both be B x C, got "
                         f"{tuple(student_logits.shape)} and {tuple(soft_targets.shape)}")
    logits = student_logits.float()
    soft = -(soft_targets.float() * F.log_softmax(logits / temperature, dim=1)).sum(1).mean()
    loss = (1.0 - hard_weight) * temperature ** 2 * soft
    if hard_weight > 0:
        if labels is None:
            raise ValueError("hard_weight > 0 needs the true labels")
        loss = loss + hard_weight * F.cross_entropy(logits, labels)
    return loss


def check_temperature(temperature: float) -> None:
    """``ValueError`` unless the teachers' softmax temperature is a finite number > 0."""
    if not 0.0 < temperature < math.inf:  # NaN fails too
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def check_hard_weight(hard_weight: float) -> None:
    """``ValueError`` unless the hard-label term's weight lies in [0, 1]."""
    if not 0.0 <= hard_weight <= 1.0:  # NaN fails too
        raise ValueError(f"hard_weight must lie in [0, 1], got {hard_weight}")
