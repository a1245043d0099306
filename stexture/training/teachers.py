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

The student learns them as Hinton et al. define distillation
(:func:`stexture.training.losses.distillation_loss`, which :func:`stexture.training.fit`
applies with ``TrainConfig(temperature=tau, hard_weight=w)``): the cross-entropy between the
softened targets and ``softmax(z / tau)`` of the student's logits ``z``, times ``tau^2``,
plus an optional hard term with the true classes, which :class:`TeacherTargets` passes on in
each batch's ``info["label"]``.

Cross-fitting (``folds``): a teacher that trained on an image labels it with what it
memorised (close to one-hot), not with what it predicts on new images. With a key -> fold
assignment (:func:`stexture.training.crossfit.assign_folds`, the one rule shared with
``stexture label``) and one teacher pair per fold, each trained on the keys outside its
fold (:func:`stexture.training.crossfit.training_keys`), every image is labelled by the pair
of its own fold, which never saw it.

G. Hinton, O. Vinyals, J. Dean, "Distilling the knowledge in a neural network",
arXiv:1503.02531, 2015.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .losses import check_temperature
from .models import ResNet, build_model
from .trainer import resolve_torch_device

__all__ = ["TeacherTargets", "dense_logits", "label_maps", "load_teacher", "module_digest",
           "teacher_targets"]


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


def _check_k_and_temperature(k: float, temperature: float) -> None:
    if not 0.0 <= k <= 1.0:  # NaN fails too
        raise ValueError(f"k must lie in [0, 1], got {k}")
    check_temperature(temperature)


class TeacherTargets:
    """Training batches ``(x, y, info)``: ``x`` the original images of ``images``, ``y`` the
    teachers' blend (:func:`teacher_targets`) on the structure and texture layers of the
    same crops, ``info`` their ``"key"`` and true class (``"label"``, int64).

    Parameters
    ----------
    images, structures, textures : loaders
        :func:`stexture.make_loader` with ``view="image"``, ``"structure"`` and
        ``"texture"``, ``p_conflict=0``, ``with_info=True`` and otherwise the same
        arguments (seed, split, keys, batch size, ``samples_per_epoch``): they yield the
        same samples with the same crops.
    structure_teacher, texture_teacher : nn.Module, or a sequence of them (one per fold)
        Trained on the structure and the texture layer; used frozen, in eval mode. With
        ``folds``, entry ``f`` is the teacher of fold ``f`` (trained on the keys outside it).
    k, temperature : float
        The structure teacher's weight in [0, 1] and the softmax temperature (> 0).
    device : where the teachers run (the student's device).
    folds : mapping of key to fold, optional
        Cross-fitting: each sample is labelled by the teachers of its fold
        (:func:`stexture.training.crossfit.assign_folds`); a key it does not place is an
        error. Without it, one teacher pair labels every sample.
    """

    def __init__(self, images: Iterable, structures: Iterable, textures: Iterable,
                 structure_teacher: nn.Module | Sequence[nn.Module],
                 texture_teacher: nn.Module | Sequence[nn.Module], k: float,
                 temperature: float = 1.0, device: str | torch.device = "cpu", *,
                 folds: Mapping[str, int] | None = None) -> None:
        _check_k_and_temperature(k, temperature)
        self.loaders = (images, structures, textures)
        lengths = {len(loader) for loader in self.loaders}
        if len(lengths) != 1:
            raise ValueError(f"the image, structure and texture loaders differ in length "
                             f"({sorted(lengths)} batches): build them with the same arguments")
        self.device = resolve_torch_device(device) if isinstance(device, str) else device
        pairs = [_per_fold(structure_teacher), _per_fold(texture_teacher)]
        if len(pairs[0]) != len(pairs[1]):
            raise ValueError(f"{len(pairs[0])} structure teachers but {len(pairs[1])} texture "
                             "teachers: give one of each per fold")
        if folds is None and len(pairs[0]) != 1:
            raise ValueError(f"{len(pairs[0])} teacher pairs need folds (key -> fold) to say "
                             "which pair labels which sample")
        if folds is not None and set(folds.values()) - set(range(len(pairs[0]))):
            raise ValueError(f"the folds {sorted(set(folds.values()))} need a teacher pair "
                             f"each; got {len(pairs[0])}")
        self.teachers = [tuple(t.to(self.device).eval().requires_grad_(False) for t in pair)
                         for pair in zip(*pairs, strict=True)]
        self.folds = folds
        self.k = k
        self.temperature = temperature

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch)

    @torch.no_grad()
    def _targets(self, structure: torch.Tensor, texture: torch.Tensor, keys: Sequence[str]
                 ) -> torch.Tensor:
        fold_of = [0] * len(keys)
        if self.folds is not None:
            missing = [key for key in keys if key not in self.folds]
            if missing:
                raise KeyError(f"{len(missing)} sample(s) have no fold (e.g. {missing[0]!r}): "
                               "the fold assignment must cover the training keys")
            fold_of = [self.folds[key] for key in keys]
        rows = torch.tensor(fold_of)
        targets = None
        on_cuda = self.device.type == "cuda"
        for fold in sorted(set(fold_of)):
            pick = torch.nonzero(rows == fold).flatten()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on_cuda):
                logits = [teacher(view[pick].to(self.device, non_blocking=True))
                          for teacher, view in zip(self.teachers[fold], (structure, texture),
                                                   strict=True)]
            blend = teacher_targets(*logits, self.k, self.temperature)
            if targets is None:
                targets = blend.new_zeros(len(keys), blend.shape[1])
            targets[pick.to(blend.device)] = blend
        return targets

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        for (x, y, info), (xs, _, info_s), (xt, _, info_t) in zip(*self.loaders, strict=True):
            if not info["key"] == info_s["key"] == info_t["key"]:
                raise RuntimeError("the image, structure and texture loaders drew different "
                                   "samples: build them with the same seed, keys and sizes")
            targets = self._targets(xs, xt, info["key"])
            # the true classes, for the distillation loss's hard term (TrainConfig.hard_weight)
            yield x, targets, {"key": info["key"], "label": y.argmax(1)}

    def __repr__(self) -> str:
        return (f"TeacherTargets(k={self.k}, temperature={self.temperature}, "
                f"folds={len(self.teachers)}, "
                f"batches={len(self)})")


def _per_fold(teacher: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    return [teacher] if isinstance(teacher, nn.Module) else list(teacher)



# ---------------------------------------------------------------- label maps (stexture label)


def dense_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's class logits at every position of its last feature map, ``B x C x h x w``:
    the model applied fully convolutionally (as ReLabel, Yun et al. CVPR 2021, does with its
    teacher), its classifier run on each position instead of on their average.

    A built-in :class:`~stexture.training.models.ResNet` is its stem and stages followed by
    ``fc`` as a 1x1 convolution; since average pooling and a linear layer commute, the mean
    of this map over all positions is exactly the model's logits for ``x``. Any other module
    provides the same as a method ``dense_logits(x) -> B x C x h x w`` (the loading hook of
    :func:`load_teacher`); ``TypeError`` otherwise.
    """
    custom = getattr(model, "dense_logits", None)
    if callable(custom):
        logits = custom(x)
    elif isinstance(model, ResNet):
        features = model.stages(model.stem(x))
        logits = (torch.einsum("bdhw,cd->bchw", features, model.fc.weight)
                  + model.fc.bias.view(1, -1, 1, 1))
    else:
        raise TypeError(f"{type(model).__name__} has no dense_logits(x) method: a teacher that "
                        "is not a built-in model must give its logits at every position "
                        "(B x C x h x w) to make label maps")
    if logits.ndim != 4 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"dense_logits must return B x C x h x w, got {tuple(logits.shape)}")
    return logits


@torch.no_grad()
def label_maps(model: nn.Module, x: torch.Tensor, grid: int, temperature: float = 1.0
               ) -> torch.Tensor:
    """``B x G x G x C`` class probabilities: :func:`dense_logits` averaged over a ``G x G``
    grid of equal cells (adaptive average pooling) and ``softmax(logits / temperature)`` per
    cell. Averaging logits within a cell is what the model's own global pooling does over
    the whole image."""
    check_temperature(temperature)
    logits = dense_logits(model, x).float()
    pooled = F.adaptive_avg_pool2d(logits, (grid, grid))
    return torch.softmax(pooled / temperature, dim=1).permute(0, 2, 3, 1).contiguous()


def module_digest(model: nn.Module) -> str:
    """SHA-256 of a module's weights and buffers (names, dtypes, shapes and bytes in
    ``state_dict`` order): the same digest for the same weights, whatever file they came
    from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_teacher(spec: str | Path | nn.Module, num_classes: int, model: str = "small"
                 ) -> nn.Module:
    """A teacher for :func:`label_maps`, in eval mode, checked to have ``num_classes``
    outputs.

    ``spec`` is one of:

    - an ``nn.Module`` (used as it is);
    - a checkpoint file of a built-in model called ``model``: what ``fit`` and the sweep
      write (``{"model": state_dict, ...}``, e.g. ``runs/structure-seed0/best.pt``) or a
      bare ``state_dict``;
    - the loading hook ``"package.module:function"``: ``function(num_classes)`` is called
      and must return the ``nn.Module`` with its weights loaded; a module that is not a
      built-in ResNet must have ``dense_logits(x)`` (see :func:`dense_logits`).

    ``ValueError`` when the checkpoint does not fit the model or the model has another
    number of classes; ``FileNotFoundError`` for a missing file.
    """
    if isinstance(spec, nn.Module):
        teacher = spec
    elif isinstance(spec, str) and ":" in spec and not Path(spec).exists():
        teacher = _from_hook(spec, num_classes)
    else:
        teacher = _from_checkpoint(Path(spec), num_classes, model)
    teacher.eval().requires_grad_(False)
    _check_classes(teacher, num_classes, spec)
    return teacher


def _from_hook(spec: str, num_classes: int) -> nn.Module:
    module_name, _, function = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"loading hook {spec!r}: {exc}") from exc
    teacher = factory(num_classes)
    if not isinstance(teacher, nn.Module):
        raise ValueError(f"loading hook {spec!r} returned {type(teacher).__name__}, not an "
                         "nn.Module")
    return teacher


def _from_checkpoint(path: Path, num_classes: int, model: str) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(f"no teacher checkpoint {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    teacher = build_model(model, num_classes)
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is not None and fc.shape[0] != num_classes:
        raise ValueError(f"teacher {path} has {fc.shape[0]} classes, the shards have "
                         f"{num_classes}")
    try:
        teacher.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"teacher {path} is not a state_dict of the built-in model "
                         f"{model!r} ({str(exc).splitlines()[0]})") from exc
    return teacher


def _check_classes(teacher: nn.Module, num_classes: int, spec: object) -> None:
    device = next(iter(teacher.parameters()), torch.empty(0)).device
    with torch.no_grad():
        logits = dense_logits(teacher, torch.zeros(1, 3, 32, 32, device=device))
    if logits.shape[1] != num_classes:
        raise ValueError(f"teacher {spec} has {logits.shape[1]} classes, the shards have "
                         f"{num_classes}")
