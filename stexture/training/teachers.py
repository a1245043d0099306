"""The other reading of the soft label: distillation from a structure and a texture teacher.

The furniture report trained a structure-biased model on structure layers and a
texture-biased model on texture layers, found them complementary, and then trained with
``y = k s + (1 - k) t``. For one image ``s`` and ``t`` differ only if they are those two
models' predictions, so the label also reads as distillation (Hinton et al., 2015) from two
teachers: a student sees the original image ``x`` and learns

.. math::

    y = k \\, \\mathrm{softmax}(T_s(S(x)) / \\tau)
        + (1 - k) \\, \\mathrm{softmax}(T_t(X(x)) / \\tau)

where ``S(x)`` is the structure layer and ``X(x)`` the texture layer of the same crop
(:func:`stexture.loader.batch.layer_view`), ``T_s`` and ``T_t`` the frozen teachers and
``tau`` the temperature. The three views come from three loaders with one seed, which draw
the same samples with the same crops (the loader's contract: crops depend on the seed, the
epoch and the slot, never on the view); the keys are checked batch by batch.

G. Hinton, O. Vinyals, J. Dean, "Distilling the knowledge in a neural network",
arXiv:1503.02531, 2015.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .trainer import resolve_torch_device

__all__ = ["TeacherTargets", "check_temperature", "teacher_targets"]


def teacher_targets(structure_logits: torch.Tensor, texture_logits: torch.Tensor, k: float,
                    temperature: float = 1.0) -> torch.Tensor:
    """``k * softmax(s / tau) + (1 - k) * softmax(t / tau)`` row by row (rows sum to 1)."""
    _check_k_and_temperature(k, temperature)
    if structure_logits.shape != texture_logits.shape or structure_logits.ndim != 2:
        raise ValueError(f"teacher logits must both be B x C, got {tuple(structure_logits.shape)}"
                         f" and {tuple(texture_logits.shape)}")
    structure = torch.softmax(structure_logits.float() / temperature, dim=1)
    texture = torch.softmax(texture_logits.float() / temperature, dim=1)
    return k * structure + (1.0 - k) * texture


def check_temperature(temperature: float) -> None:
    """``ValueError`` unless the teachers' softmax temperature is a finite number > 0."""
    if not 0.0 < temperature < math.inf:  # NaN fails too
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def _check_k_and_temperature(k: float, temperature: float) -> None:
    if not 0.0 <= k <= 1.0:  # NaN fails too
        raise ValueError(f"k must lie in [0, 1], got {k}")
    check_temperature(temperature)


class TeacherTargets:
    """Training batches ``(x, y)``: ``x`` the original images of ``images``, ``y`` the
    teachers' blend (:func:`teacher_targets`) on the structure and texture layers of the
    same crops.

    Parameters
    ----------
    images, structures, textures : loaders
        :func:`stexture.make_loader` with ``view="image"``, ``"structure"`` and
        ``"texture"``, ``p_conflict=0``, ``with_info=True`` and otherwise the same
        arguments (seed, split, keys, batch size, ``samples_per_epoch``): they yield the
        same samples with the same crops.
    structure_teacher, texture_teacher : nn.Module
        Trained on the structure and the texture layer; used frozen, in eval mode.
    k, temperature : float
        The structure teacher's weight in [0, 1] and the softmax temperature (> 0).
    device : where the teachers run (the student's device).
    """

    def __init__(self, images: Iterable, structures: Iterable, textures: Iterable,
                 structure_teacher: nn.Module, texture_teacher: nn.Module, k: float,
                 temperature: float = 1.0, device: str | torch.device = "cpu") -> None:
        _check_k_and_temperature(k, temperature)
        self.loaders = (images, structures, textures)
        lengths = {len(loader) for loader in self.loaders}
        if len(lengths) != 1:
            raise ValueError(f"the image, structure and texture loaders differ in length "
                             f"({sorted(lengths)} batches): build them with the same arguments")
        self.device = resolve_torch_device(device) if isinstance(device, str) else device
        self.teachers = tuple(t.to(self.device).eval().requires_grad_(False)
                              for t in (structure_teacher, texture_teacher))
        self.k = k
        self.temperature = temperature

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch)

    @torch.no_grad()
    def _targets(self, structure: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        on_cuda = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on_cuda):
            logits = [teacher(view.to(self.device, non_blocking=True))
                      for teacher, view in zip(self.teachers, (structure, texture), strict=True)]
        return teacher_targets(*logits, self.k, self.temperature)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for (x, _, info), (xs, _, info_s), (xt, _, info_t) in zip(*self.loaders, strict=True):
            if not info["key"] == info_s["key"] == info_t["key"]:
                raise RuntimeError("the image, structure and texture loaders drew different "
                                   "samples: build them with the same seed, keys and sizes")
            yield x, self._targets(xs, xt)

    def __repr__(self) -> str:
        return f"TeacherTargets(k={self.k}, temperature={self.temperature}, batches={len(self)})"

