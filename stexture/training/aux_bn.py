"""Auxiliary batch normalisation: separate BatchNorm statistics for cue-conflict composites.

Li et al. (ICLR 2021, "Shape-Texture Debiased Neural Network Training") train every recipe
with ``--mixbn``: the composites go through auxiliary BatchNorm layers, the original images
through the main ones, and the model is evaluated with the main ones (the disentangled
BatchNorm of Xie et al., "Adversarial Examples Improve Image Recognition", CVPR 2020).
Composites have other first and second moments than photos (a texture pasted on another
object's shading); pooled into one set of statistics they shift the statistics that the
clean test images are normalised with.

:func:`aux_bn` turns every BatchNorm of any model into a :class:`DualBatchNorm`; while a
:func:`route` context is active, the rows it marks go through the auxiliary layer. The
built-in trainer (:func:`stexture.training.fit`) does this itself for batches whose info
dict has ``is_conflict``. Users of their own training loop write::

    model = aux_bn(build_model("small", 8))
    for x, y, info in make_loader(shards, k=0.8, mode="add", with_info=True):
        with route(model, info["is_conflict"]):
            loss = soft_ce(model(x), y)
        ...
    model.eval()  # evaluation always uses the main statistics

The affine parameters (scale and shift) are **separate**: the auxiliary layer is a full
copy of the BatchNorm, as in Li et al.'s and Xie et al.'s code (a second BatchNorm module
per layer). A shared affine would let the composites' gradients move the scale and shift
that clean images are evaluated with, which is the coupling the auxiliary layer exists to
remove; the convolutions stay shared.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["DualBatchNorm", "aux_bn", "has_aux_bn", "route"]


class DualBatchNorm(nn.Module):
    """A BatchNorm layer ``main`` with an auxiliary copy ``aux`` (own statistics and
    affine). In training mode the rows of ``self.routing`` (a bool mask over the batch, set
    by :func:`route`) go through ``aux`` and the others through ``main``; in evaluation
    mode, or without a mask, every row goes through ``main``."""

    def __init__(self, main: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.main = main
        self.aux = copy.deepcopy(main)
        self.aux.reset_running_stats()
        self.routing: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.routing
        if not self.training or mask is None or not bool(mask.any()):
            return self.main(x)
        if bool(mask.all()):
            return self.aux(x)
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"the routing mask has {mask.shape[0]} rows but the batch has "
                             f"{x.shape[0]}")
        mask = mask.to(x.device)
        out = torch.empty_like(x)
        out[~mask] = self.main(x[~mask])
        out[mask] = self.aux(x[mask])
        return out


def aux_bn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm (1d, 2d, 3d, SyncBatchNorm) of ``model`` in place by a
    :class:`DualBatchNorm` whose ``main`` is the original layer (weights and statistics kept)
    and whose ``aux`` is a copy with fresh running statistics; return ``model``.

    The state dict's BatchNorm names gain ``.main`` / ``.aux``; build the model the same
    way before loading one of its checkpoints. A model that already has dual layers is a
    ``ValueError``.
    """
    if has_aux_bn(model):
        raise ValueError("the model already has auxiliary BatchNorm layers")
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, DualBatchNorm(child))
                replaced += 1
    if replaced == 0:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer to pair")
    return model


def has_aux_bn(model: nn.Module) -> bool:
    """Whether ``model`` holds a :class:`DualBatchNorm`."""
    return any(isinstance(m, DualBatchNorm) for m in model.modules())


@contextmanager
def route(model: nn.Module, is_conflict: torch.Tensor) -> Iterator[None]:
    """Within the context, the rows of a batch with ``is_conflict`` true go through the
    auxiliary BatchNorm of every :class:`DualBatchNorm` of ``model`` (training mode only)."""
    mask = torch.as_tensor(is_conflict, dtype=torch.bool).reshape(-1)
    layers = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    for layer in layers:
        layer.routing = mask
    try:
        yield
    finally:
        for layer in layers:
            layer.routing = None
