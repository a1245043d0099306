"""Writing soft-label sidecars: ``stexture label`` (:func:`label_shards`).

Every sample of every split gets two label maps (the format is in
:mod:`stexture.shards.labels`): ``s``, a structure model applied to the sample's structure
layer, and ``t``, a texture model applied to its texture layer (offset to mid-grey, as the
loader's ``view="texture"`` shows it), each applied fully convolutionally to the whole
image (:func:`~stexture.training.teachers.label_maps`).

The two models are either given (checkpoints of the built-in models, or any module through
the loading hook of :func:`~stexture.training.teachers.load_teacher`; one pair, or one pair
per fold when they were cross-fitted elsewhere, as a sweep's teachers are), or trained here with
cross-fitting: ``folds`` structure models and ``folds`` texture models, the pair of fold
``f`` trained on the training samples outside fold ``f``
(:mod:`stexture.training.crossfit`) and labelling the samples inside it, so that no
sample's label comes from a model that trained on it.

The whole image is resized so that its shorter side is ``input_size`` (keeping its aspect)
before the models see it: by default the image size at which a training crop of average
area (``(1 + min_scale) / 2`` of the image) shows objects at the scale the models trained
on, rounded to a multiple of 8 (80 for 64 px crops and ``min_scale`` 0.35).

Writing is atomic and resumable: each sidecar shard is written whole (partial file, then
rename) and recorded with its SHA-256 in ``progress.json``, as is each trained model; a run
started again with the same settings skips what is recorded, and one with other settings is
an error unless ``overwrite``, which first removes the files the sidecar's progress and
manifest name (and nothing else).
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..loader.batch import IMAGENET_MEAN, IMAGENET_STD
from ..shards import storage
from ..shards.folder import ShardFolder
from ..shards.format import MANIFEST_NAME, Manifest
from ..shards.labels import (
    LABELS_FORMAT,
    LABELS_VERSION,
    METHOD,
    LabelSet,
    label_folder,
    read_label_set,
    register_label_set,
)
from ._soft_labels_apply import _label_all
from ._soft_labels_progress import _Progress
from ._soft_labels_teachers import (
    _KINDS,
    _fold_assignment,
    _fold_teachers,
    _teachers_of,
)
from .crossfit import DEFAULT_FOLDS, FOLD_RULE, check_folds
from .losses import check_temperature
from .models import MODELS
from .teachers import load_teacher, module_digest
from .trainer import Log, TrainConfig, resolve_torch_device

__all__ = ["DEFAULT_GRID", "DEFAULT_TOPK_FROM", "default_input_size", "label_shards"]

DEFAULT_GRID = 10
#: With this many classes or more, only the top ``DEFAULT_TOPK`` of each cell are stored.
DEFAULT_TOPK_FROM = 64
DEFAULT_TOPK = 5


def default_input_size(image_size: int = 64, min_scale: float = 0.35) -> int:
    """The side the whole image is resized to for labelling: ``image_size`` over the side
    share of an average-area crop, ``sqrt((1 + min_scale) / 2)``, rounded to a multiple
    of 8 (the built-in models' stride)."""
    return max(8, 8 * round(image_size / math.sqrt((1 + min_scale) / 2) / 8))


def _check_settings(grid: int, input_size: int, topk: int | None, temperature: float) -> None:
    if int(grid) != grid or grid < 1:
        raise ValueError(f"grid must be an integer >= 1, got {grid}")
    if int(input_size) != input_size or input_size < 8:
        raise ValueError(f"input_size must be an integer >= 8, got {input_size}")
    if topk is not None and (int(topk) != topk or topk < 1):
        raise ValueError(f"topk must be an integer >= 1 (or None: every class), got {topk}")
    check_temperature(temperature)


TeacherSpec = str | Path | nn.Module


def label_shards(
    root: str | Path | ShardFolder,
    *,
    name: str = "default",
    structure_model: TeacherSpec | Sequence[TeacherSpec] | None = None,
    texture_model: TeacherSpec | Sequence[TeacherSpec] | None = None,
    model: str = "small",
    folds: int = DEFAULT_FOLDS,
    temperature: float = 1.0,
    grid: int = DEFAULT_GRID,
    input_size: int | None = None,
    topk: int | None = 0,
    train: TrainConfig | None = None,
    image_size: int = 64,
    batch_size: int = 64,
    min_scale: float = 0.35,
    device: str = "cpu",
    workers: int = 0,
    teachers_from: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    log: Log | None = None,
) -> LabelSet:
    """Write the soft-label sidecar ``name`` of the shard folder ``root`` and return it.

    Parameters
    ----------
    root : the shard folder (with ``manifest.json`` and ``index.csv``), or the
        :class:`~stexture.shards.ShardFolder` it was opened as.
    name : the label set's name: it goes to ``root/labels-NAME``.
    structure_model, texture_model : the two teachers (both or neither): an ``nn.Module``, a
        checkpoint of the built-in ``model``, or ``"package.module:function"``
        (:func:`~stexture.training.teachers.load_teacher`). Or a sequence of them, one per
        fold, for teachers cross-fitted elsewhere: the pair of fold ``f`` labels the samples
        that :func:`~stexture.training.crossfit.assign_folds` places in fold ``f`` by split
        and class (the rule :data:`~stexture.training.crossfit.FOLD_RULE`; on a sweep's
        training subset it gives the sweep's ``structure-fold<f>`` teachers their folds).
        Neither: train them here with cross-fitting.
    model : the built-in architecture of checkpoints and of the models trained here.
    folds : cross-fitting folds (>= 2) when the teachers are trained here.
    temperature : softmax temperature of the label maps (> 0).
    grid : the label map is ``grid x grid`` cells over the whole image.
    input_size : the shorter side the whole image is resized to for the teachers; ``None``:
        :func:`default_input_size` of ``image_size`` and ``min_scale``.
    topk : store only the ``topk`` most probable classes per cell; ``None``: every class;
        ``0``: every class below :data:`DEFAULT_TOPK_FROM` classes, else the top 5.
    train, image_size, batch_size, min_scale : how the cross-fitted teachers are trained
        (the built-in trainer's settings, crops and batch size, as in the sweep).
    device, workers : where the teachers run and train, and loader worker processes.
    teachers_from : the name of another label set of these shards whose cross-fitted
        models (and folds) label this one, instead of training new ones: the same teachers
        at another grid, temperature or input size (``model``, ``folds`` and the training
        settings are then those of that set).
    overwrite : replace a sidecar made with other settings (else that is an error).
    progress : a progress bar over the samples (tqdm, on stderr).
    log : where progress lines go (``None``: nowhere).

    Raises
    ------
    ValueError
        Bad settings, one teacher given without the other, a teacher with another number
        of classes, a sample that cannot be decoded, a sidecar made with other settings
        (without ``overwrite``), or too few samples to cross-fit. (Without a ``val`` split
        the cross-fitted models keep their last epoch; with one, their best.)
    FileNotFoundError
        No manifest, index or teacher checkpoint.
    """
    log = log or (lambda message: None)
    shards = ShardFolder.open(root)  # manifest.json read once, index.csv at most once
    manifest = shards.manifest
    num_classes = manifest.num_classes
    if topk == 0:
        topk = DEFAULT_TOPK if num_classes >= DEFAULT_TOPK_FROM else None
    input_size = default_input_size(image_size, min_scale) if input_size is None else input_size
    _check_settings(grid, input_size, topk, temperature)
    if (structure_model is None) != (texture_model is None):
        raise ValueError("give both --structure-model and --texture-model, or neither (to "
                         "train them here with cross-fitting)")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    train = train or TrainConfig()
    train.validate()
    folder = label_folder(manifest.root, name)
    torch_device = resolve_torch_device(device)
    given = structure_model is not None
    teachers: list[tuple[nn.Module, nn.Module]] = []
    if given:
        teachers = _given_teachers(structure_model, texture_model, num_classes, model,
                                   torch_device)
    if teachers_from is not None:
        if given:
            raise ValueError("give the teachers either as models or as teachers_from, not both")
        teachers, folds = _teachers_of(manifest, teachers_from, torch_device)
    # given: one pair labels every sample, or one pair per fold
    label_folds = (len(teachers) if len(teachers) > 1 else None) if given else folds
    settings = {
        "grid": int(grid), "input_size": int(input_size), "topk": topk,
        "temperature": float(temperature), "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "source": {info.name: info.sha256 for infos in manifest.splits.values()
                   for info in infos},
        "teachers": ({"given": [module_digest(m) for m in teachers[0]]}
                     if given and label_folds is None else
                     {"given": [[module_digest(m) for m in pair] for pair in teachers]}
                     if given else
                     {"from": teachers_from, "digests": [[module_digest(m) for m in pair]
                                                         for pair in teachers]}
                     if teachers_from is not None else
                     {"crossfit": {"folds": check_folds(folds), "model": model,
                                   "image_size": image_size, "batch_size": batch_size,
                                   "min_scale": min_scale, "train": vars(train)}}),
    }
    state = _Progress(folder, settings, overwrite)
    fold_of = _fold_assignment(shards, label_folds)
    if not teachers:
        teachers = [_fold_teachers(shards, state, fold_of, fold, model, train, image_size,
                                   batch_size, min_scale, torch_device, workers, log)
                    for fold in range(folds)]
    _label_all(manifest, state, teachers, fold_of, torch_device, progress, log)
    _write_manifest(manifest, state, name, teachers, given, label_folds, teachers_from)
    register_label_set(manifest.root, name)
    log(f"label set {name!r}: {sum(manifest.count(s) for s in manifest.splits)} samples "
        f"-> {folder}")
    return read_label_set(manifest.root, name)


def _given_teachers(structure_model: TeacherSpec | Sequence[TeacherSpec],
                    texture_model: TeacherSpec | Sequence[TeacherSpec], num_classes: int,
                    model: str, device: torch.device) -> list[tuple[nn.Module, nn.Module]]:
    """The given teachers as pairs: one, or one per fold (two sequences of one length)."""
    specs = [list(spec) if isinstance(spec, (list, tuple)) else [spec]
             for spec in (structure_model, texture_model)]
    if len(specs[0]) != len(specs[1]):
        raise ValueError(f"{len(specs[0])} structure model(s) but {len(specs[1])} texture "
                         "model(s): give one of each (or one of each per fold)")
    if len(specs[0]) > 1:
        check_folds(len(specs[0]))
    elif not specs[0]:
        raise ValueError("an empty list of teachers: give one model of each kind, or one per "
                         "fold")
    return [(load_teacher(s, num_classes, model).to(device),
             load_teacher(t, num_classes, model).to(device)) for s, t in zip(*specs, strict=True)]


def _write_manifest(manifest: Manifest, state: _Progress, name: str,
                    teachers: list[tuple[nn.Module, nn.Module]], given: bool,
                    folds: int | None, teachers_from: str | None) -> None:
    """``labels-NAME/manifest.json``: a shard manifest of the sidecar shards plus the
    ``labels`` record (see :mod:`stexture.shards.labels`); ``folds`` None: one teacher pair
    labelled every sample."""
    settings = state.settings
    splits = {split: {"count": sum(i.count for i in infos),
                      "shards": [{"name": i.name, "count": i.count,
                                  "sha256": state.done[i.name]} for i in infos]}
              for split, infos in manifest.splits.items()}
    if given:
        made_by = {"given": "the models given to `stexture label`"
                   + ("" if folds is None else ", one pair per fold")}
    elif teachers_from is not None:
        made_by = {**read_label_set(manifest, teachers_from).info["made_by"],
                   "from": teachers_from}
    else:
        made_by = {"crossfit": settings["teachers"]["crossfit"]}
    labels = {
        "format": LABELS_FORMAT, "version": LABELS_VERSION, "name": name,
        "grid": settings["grid"], "topk": settings["topk"], "dtype": "float16",
        "temperature": settings["temperature"], "input_size": settings["input_size"],
        "mean": settings["mean"], "std": settings["std"],
        "layers": {"s": "structure model on the structure layer",
                   "t": "texture model on the texture layer (image - structure + 128)"},
        "teachers": {kind: [module_digest(pair[i]) for pair in teachers]
                     for i, kind in enumerate(_KINDS)},
        "made_by": made_by,
        "folds": folds,
        "fold_rule": None if folds is None else FOLD_RULE,
        "source": settings["source"],
    }
    record = {"format": LABELS_FORMAT, "format_version": LABELS_VERSION,
              "classes": manifest.classes, "splits": splits, "method": METHOD,
              "params": {"grid": settings["grid"], "temperature": settings["temperature"]},
              "labels": labels,
              "versions": {"stexture": __version__, "torch": torch.__version__,
                           "numpy": np.__version__, "python": platform.python_version()}}
    storage.write_atomically(state.folder / MANIFEST_NAME,
                             (json.dumps(record, indent=2) + "\n").encode())
