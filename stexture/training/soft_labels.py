"""Writing soft-label sidecars: ``stexture label`` (:func:`label_shards`).

Every sample of every split gets two label maps (the format is in
:mod:`stexture.shards.labels`): ``s``, a structure model applied to the sample's structure
layer, and ``t``, a texture model applied to its texture layer (offset to mid-grey, as the
loader's ``view="texture"`` shows it), each applied fully convolutionally to the whole
image (:func:`~stexture.training.teachers.label_maps`).

The two models are either given (checkpoints of the built-in models, or any module through
the loading hook of :func:`~stexture.training.teachers.load_teacher`), or trained here with
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

import io
import json
import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..loader import make_eval_loader, make_loader
from ..loader.batch import IMAGENET_MEAN, IMAGENET_STD, layer_view
from ..shards import storage
from ..shards.format import (
    MANIFEST_NAME,
    Manifest,
    check_member_file_name,
    decode_sample,
    iter_tar_samples,
    read_index,
    read_manifest,
    write_tar,
)
from ..shards.labels import (
    LABELS_FORMAT,
    LABELS_VERSION,
    METHOD,
    PROGRESS_NAME,
    LabelSet,
    encode_label_sample,
    label_folder,
    read_label_set,
    register_label_set,
)
from ..shards.storage import sha256_of
from .crossfit import DEFAULT_FOLDS, FOLD_RULE, assign_folds, check_folds, training_keys
from .models import MODELS, build_model
from .teachers import check_temperature, label_maps, load_teacher, module_digest
from .trainer import Log, TrainConfig, fit, resolve_torch_device

__all__ = ["DEFAULT_GRID", "DEFAULT_TOPK_FROM", "default_input_size", "label_shards"]

DEFAULT_GRID = 10
#: With this many classes or more, only the top ``DEFAULT_TOPK`` of each cell are stored.
DEFAULT_TOPK_FROM = 64
DEFAULT_TOPK = 5
_KINDS = ("structure", "texture")
_MODELS_FOLDER = "models"
_BATCH = 32


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


def label_shards(
    root: str | Path,
    *,
    name: str = "default",
    structure_model: str | Path | nn.Module | None = None,
    texture_model: str | Path | nn.Module | None = None,
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
    root : the shard folder (with ``manifest.json`` and ``index.csv``).
    name : the label set's name: it goes to ``root/labels-NAME``.
    structure_model, texture_model : the two teachers (both or neither): an ``nn.Module``, a
        checkpoint of the built-in ``model``, or ``"package.module:function"``
        (:func:`~stexture.training.teachers.load_teacher`). Neither: train them here with
        cross-fitting.
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
    manifest = read_manifest(root)
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
        teachers = [(load_teacher(structure_model, num_classes, model).to(torch_device),
                     load_teacher(texture_model, num_classes, model).to(torch_device))]
    if teachers_from is not None:
        if given:
            raise ValueError("give the teachers either as models or as teachers_from, not both")
        teachers, folds = _teachers_of(manifest, teachers_from, torch_device)
    settings = {
        "grid": int(grid), "input_size": int(input_size), "topk": topk,
        "temperature": float(temperature), "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "source": {info.name: info.sha256 for infos in manifest.splits.values()
                   for info in infos},
        "teachers": ({"given": [module_digest(m) for m in teachers[0]]} if given else
                     {"from": teachers_from, "digests": [[module_digest(m) for m in pair]
                                                         for pair in teachers]}
                     if teachers_from is not None else
                     {"crossfit": {"folds": check_folds(folds), "model": model,
                                   "image_size": image_size, "batch_size": batch_size,
                                   "min_scale": min_scale, "train": vars(train)}}),
    }
    state = _Progress(folder, settings, overwrite)
    fold_of = _fold_assignment(manifest, folds if not given else None)
    if not teachers:
        teachers = [_fold_teachers(manifest, state, fold_of, fold, model, train, image_size,
                                   batch_size, min_scale, torch_device, workers, log)
                    for fold in range(folds)]
    _label_all(manifest, state, teachers, fold_of, torch_device, progress, log)
    _write_manifest(manifest, state, name, teachers, given, folds, teachers_from)
    register_label_set(manifest.root, name)
    log(f"label set {name!r}: {sum(manifest.count(s) for s in manifest.splits)} samples "
        f"-> {folder}")
    return read_label_set(manifest.root, name)


# ---------------------------------------------------------------- progress


class _Progress:
    """``progress.json`` of a sidecar: the settings, the trained models and the written
    shards with their SHA-256."""

    def __init__(self, folder: Path, settings: dict[str, Any], overwrite: bool) -> None:
        self.folder = folder
        self.path = folder / PROGRESS_NAME
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        self.done: dict[str, str] = {}
        self.models: dict[str, str] = {}
        saved = self._saved()
        if saved is not None and (overwrite or saved.get("settings") != self.settings):
            if not overwrite:
                differ = sorted(k for k in set(self.settings) | set(saved.get("settings", {}))
                                if self.settings.get(k) != saved.get("settings", {}).get(k))
                raise ValueError(f"{folder} holds labels made with other settings "
                                 f"({', '.join(differ)} differ): use overwrite (--overwrite) "
                                 "to replace them, or another name")
            self._remove(saved)
            saved = None
        elif saved is None and (folder / MANIFEST_NAME).is_file():
            if not overwrite:
                raise ValueError(f"{folder} holds a label set without its progress file: "
                                 "use overwrite (--overwrite) to replace it")
            self._remove({"done": _manifest_shards(folder)})
        if saved is not None:
            self.done, self.models = dict(saved.get("done", {})), dict(saved.get("models", {}))
        folder.mkdir(parents=True, exist_ok=True)
        self.save()

    def _saved(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path} is damaged ({exc}); remove it to start over") from exc

    def _remove(self, saved: dict[str, Any]) -> None:
        """Remove what this sidecar wrote (as its progress names it), nothing else."""
        names = list(saved.get("done", {})) + [MANIFEST_NAME]
        for file in names:
            (self.folder / check_member_file_name(file, str(self.path))).unlink(missing_ok=True)
        for file in saved.get("models", {}):
            path = self.folder / _MODELS_FOLDER / check_member_file_name(file, str(self.path))
            path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.done, self.models = {}, {}

    def save(self) -> None:
        payload = {"format": LABELS_FORMAT, "settings": self.settings, "done": self.done,
                   "models": self.models}
        storage.write_atomically(self.path, (json.dumps(payload, indent=2) + "\n").encode())

    def finished(self, shard: str) -> bool:
        path = self.folder / shard
        return shard in self.done and path.is_file() and sha256_of(path) == self.done[shard]


def _manifest_shards(folder: Path) -> dict[str, str]:
    try:
        sidecar = read_manifest(folder)
    except (ValueError, FileNotFoundError):
        return {}
    return {info.name: info.sha256 for infos in sidecar.splits.values() for info in infos}


# ---------------------------------------------------------------- teachers


def _fold_assignment(manifest: Manifest, folds: int | None) -> dict[str, int] | None:
    if folds is None:
        return None
    return assign_folds({row["key"]: (row["split"], int(row["cls"]))
                         for row in read_index(manifest.root)}, folds)


def _fold_teachers(manifest: Manifest, state: _Progress, fold_of: dict[str, int], fold: int,
                   model: str, train: TrainConfig, image_size: int, batch_size: int,
                   min_scale: float, device: torch.device, workers: int, log: Log
                   ) -> tuple[nn.Module, nn.Module]:
    """The structure and texture models of ``fold``: loaded when ``progress.json`` records
    them as trained, else trained on the training samples outside the fold."""
    train_keys = [row["key"] for row in read_index(manifest.root) if row["split"] == "train"]
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
        loader = make_loader(str(manifest.root), k=1.0, p_conflict=0.0, view=kind, keys=keys,
                             batch_size=batch_size, image_size=image_size, seed=train.seed,
                             min_scale=min_scale, num_workers=workers)
        val = (make_eval_loader(str(manifest.root), split="val", view=kind,
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


# ---------------------------------------------------------------- labelling


def _views(image: np.ndarray, structure: np.ndarray, input_size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The structure layer and the texture view of one image, resized so that the shorter
    side is ``input_size`` (pixel-area averaging when shrinking)."""
    height, width = image.shape[:2]
    scale = input_size / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    texture = layer_view(image[None], structure[None], "texture")[0]
    return tuple(cv2.resize(layer, size, interpolation=interpolation)
                 for layer in (structure, texture))


def _to_input(layers: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 ``H x W x 3`` layers -> the normalised ``B x 3 x H x W`` float batch the
    loader would give."""
    x = torch.from_numpy(np.stack(layers)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def _label_all(manifest: Manifest, state: _Progress,
               teachers: list[tuple[nn.Module, nn.Module]], fold_of: dict[str, int] | None,
               device: torch.device, progress: bool, log: Log) -> None:
    infos = [info for infos in manifest.splits.values() for info in infos]
    done = [info for info in infos if state.finished(info.name)]
    total = sum(info.count for info in infos)
    if done:
        log(f"{len(done)} of {len(infos)} label shards written earlier, kept")
    settings = state.settings
    with tqdm(total=total, initial=sum(i.count for i in done), unit="sample", desc="label",
              disable=not progress, dynamic_ncols=True) as bar:
        for info in infos:
            if state.finished(info.name):
                continue
            samples = _label_shard(manifest, manifest.root / info.name, teachers, fold_of,
                                   settings, device, bar.update)
            path = state.folder / info.name
            buffer = io.BytesIO()
            write_tar(buffer, samples)
            storage.write_atomically(path, buffer.getvalue())
            state.done[info.name] = sha256_of(path)
            state.save()


def _label_shard(manifest: Manifest, path: Path, teachers: list[tuple[nn.Module, nn.Module]],
                 fold_of: dict[str, int] | None, settings: dict[str, Any],
                 device: torch.device, advance: Callable[[int], Any]) -> list[dict[str, Any]]:
    """The sidecar samples of one shard, in its order, batched by fold and input shape."""
    keys, groups = [], {}
    for raw in iter_tar_samples(path):
        try:
            decoded = decode_sample(raw, manifest.max_pixels)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; a sample without labels would stop the soft-"
                             "label loader (check the shards with `stexture inspect`)") from exc
        key = decoded.key
        fold = 0 if fold_of is None else fold_of.get(key)
        if fold is None:
            raise ValueError(f"sample {key!r} of {path} is not in index.csv: it has no fold")
        structure, texture = _views(decoded.image, decoded.structure, settings["input_size"])
        keys.append(key)
        groups.setdefault((fold, structure.shape), []).append((key, structure, texture))
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (fold, _), members in groups.items():
        for start in range(0, len(members), _BATCH):
            chunk = members[start:start + _BATCH]
            s, t = (label_maps(teacher, _to_input([m[i] for m in chunk], device),
                               settings["grid"], settings["temperature"]).cpu().numpy()
                    for i, teacher in ((1, teachers[fold][0]), (2, teachers[fold][1])))
            for j, member in enumerate(chunk):
                maps[member[0]] = (s[j], t[j])
            advance(len(chunk))
    return [encode_label_sample(key, *maps[key], settings["topk"]) for key in keys]


def _write_manifest(manifest: Manifest, state: _Progress, name: str,
                    teachers: list[tuple[nn.Module, nn.Module]], given: bool,
                    folds: int, teachers_from: str | None) -> None:
    """``labels-NAME/manifest.json``: a shard manifest of the sidecar shards plus the
    ``labels`` record (see :mod:`stexture.shards.labels`)."""
    settings = state.settings
    splits = {split: {"count": sum(i.count for i in infos),
                      "shards": [{"name": i.name, "count": i.count,
                                  "sha256": state.done[i.name]} for i in infos]}
              for split, infos in manifest.splits.items()}
    if given:
        made_by = {"given": "the models given to `stexture label`"}
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
        "folds": None if given else folds,
        "fold_rule": None if given else FOLD_RULE,
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
