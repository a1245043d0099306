"""The teachers of a sidecar (:mod:`.soft_labels`): the folds, the cross-fitted models
trained or loaded, or another sidecar's."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..loader import make_eval_loader, make_loader
from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from ..shards.labels import read_label_set
from ._soft_labels_progress import _MODELS_FOLDER, _Progress
from .crossfit import assign_folds, training_keys
from .models import build_model
from .teachers import module_digest
from .trainer import Log, TrainConfig, fit

_KINDS = ("structure", "texture")


def _fold_assignment(folder: ShardFolder, folds: int | None) -> dict[str, int] | None:
    """Every key's fold (stratified by split and class), from the folder's one index."""
    if folds is None:
        return None
    return assign_folds({row["key"]: (row["split"], int(row["cls"])) for row in folder.index},
                        folds)


def _fold_teachers(folder: ShardFolder, state: _Progress, fold_of: dict[str, int], fold: int,
                   model: str, train: TrainConfig, image_size: int, batch_size: int,
                   min_scale: float, device: torch.device, workers: int, log: Log
                   ) -> tuple[nn.Module, nn.Module]:
    """The structure and texture models of ``fold``: loaded when ``progress.json`` records
    them as trained, else trained on the training samples outside the fold."""
    manifest = folder.manifest
    train_keys = [row["key"] for row in folder.index if row["split"] == "train"]
    keys = training_keys(fold_of, fold, train_keys)
    has_val = bool(manifest.splits.get("val"))
    pair = []
    for kind in _KINDS:
        file = f"{kind}-fold{fold}.pt"
        path = state.folder / _MODELS_FOLDER / file
        teacher = build_model(model, manifest.num_classes)
        if file in state.models and path.is_file():
            teacher.load_state_dict(torch.load(path, map_location="cpu",
                                               weights_only=True)["model"])
            if module_digest(teacher) == state.models[file]:
                log(f"{kind} model of fold {fold}: trained earlier, loaded")
                pair.append(teacher.to(device).eval())
                continue
        path.unlink(missing_ok=True)  # an unfinished or changed model of ours
        log(f"{kind} model of fold {fold}: training on {len(keys)} samples")
        loader = make_loader(folder, k=1.0, p_conflict=0.0, view=kind, keys=keys,
                             batch_size=batch_size, image_size=image_size, seed=train.seed,
                             min_scale=min_scale, num_workers=workers)
        val = (make_eval_loader(folder, split="val", view=kind,
                                batch_size=batch_size, image_size=image_size,
                                num_workers=workers) if has_val else None)
        fit(teacher, loader, val, train, device=device, checkpoint_path=path)
        if not path.is_file():  # no validation split: fit keeps the last epoch in memory
            _save_state(teacher, path)
        teacher.load_state_dict(torch.load(path, map_location="cpu",
                                           weights_only=True)["model"])
        state.models[file] = module_digest(teacher)
        state.save()
        pair.append(teacher.to(device).eval())
    return pair[0], pair[1]


def _teachers_of(manifest: Manifest, name: str, device: torch.device
                 ) -> tuple[list[tuple[nn.Module, nn.Module]], int]:
    """The cross-fitted models of label set ``name`` (checked against the digests its
    manifest records) and its number of folds."""
    source = read_label_set(manifest, name)
    info = source.info
    made_by = info.get("made_by") or {}
    if made_by.get("from"):  # that set borrowed its models too: they are in the lender's
        return _teachers_of(manifest, made_by["from"], device)
    crossfit = made_by.get("crossfit")
    if not info.get("folds") or crossfit is None:
        raise ValueError(f"label set {name!r} was not made by models trained with "
                         "cross-fitting here: give its models instead")
    pairs = []
    for fold in range(int(info["folds"])):
        pair = []
        for kind in _KINDS:
            teacher = build_model(crossfit["model"], manifest.num_classes)
            path = source.folder / _MODELS_FOLDER / f"{kind}-fold{fold}.pt"
            if not path.is_file():
                raise FileNotFoundError(f"label set {name!r} lacks its model {path}")
            teacher.load_state_dict(torch.load(path, map_location="cpu",
                                               weights_only=True)["model"])
            if module_digest(teacher) != info["teachers"][kind][fold]:
                raise ValueError(f"{path} is not the model label set {name!r} was made with "
                                 "(its digest differs)")
            pair.append(teacher.to(device).eval())
        pairs.append((pair[0], pair[1]))
    return pairs, int(info["folds"])


def _save_state(model: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"model": model.state_dict()}, partial)
    partial.replace(path)
