"""The k sweep: train one model per (k, seed), a vanilla baseline per seed and the k=0 / k=1
ensemble per seed, then report which k gives the best clean validation accuracy.

Every run's result is written to ``OUT/runs/<name>/result.json`` (and its best checkpoint to
``best.pt`` beside it) as soon as the run finishes, so a sweep that is killed and started
again with the same settings skips the finished runs. ``OUT/sweep.json`` records the
settings; a restart with different settings into the same folder is an error.

Run names: ``k0.4-seed1``, ``vanilla-seed1`` (original images only, one-hot labels),
``vanilla-matched-seed1`` (vanilla shown as many images as an add-mode run: the
compute-matched baseline) and ``ensemble-seed1`` (the averaged probabilities of the k=0 and
k=1 models of seed 1).

Students: with ``student="cue-conflict"`` (the default) a k run trains on cue-conflict
batches labelled ``k * onehot(structure class) + (1 - k) * onehot(texture class)``. With
``student="teachers"`` each seed first trains ``structure-seed1`` and ``texture-seed1``, one
model on each layer of the images (one-hot labels, judged on the same layer of the
validation split), and a k run trains a student on the original images against
``k * softmax(T_s(structure) / tau) + (1 - k) * softmax(T_t(texture) / tau)`` from those two
models of its seed (:mod:`stexture.training.teachers`).

Optimiser steps: with ``train_fraction < 1`` and ``match_steps`` (the default) every epoch
still has as many batches as an epoch of the full training split (the loader's
``samples_per_epoch``; the subset is gone over again, freshly permuted), so a 40% run gets
the same number of optimiser steps and the same learning-rate schedule as the 100% run and
the comparison is one of data, not of training budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..loader import make_eval_loader, make_loader
from ..shards.format import Manifest, read_index, read_manifest
from .aux_bn import aux_bn as with_aux_bn
from .models import MODELS, build_model
from .report import REQUIRED_METRIC, write_report
from .teachers import TeacherTargets
from .trainer import (
    Log,
    TrainConfig,
    balanced_class_weights,
    evaluate,
    fit,
    load_init_weights,
    resolve_torch_device,
    seed_everything,
)

__all__ = ["STUDENTS", "TrainFn", "parse_k_values", "stratified_subset", "sweep"]

TrainFn = Callable[[Iterable, Mapping[str, Iterable], "float | None", int], Mapping[str, Any]]
SETTINGS_NAME = "sweep.json"
RESULT_NAME = "result.json"
CHECKPOINT_NAME = "best.pt"
# the cue-conflict validation set is drawn with this seed in every run, so all runs are
# judged on the same images
EVAL_SEED = 0
STUDENTS = ("cue-conflict", "teachers")
# the teacher runs of student="teachers": each trains on one layer view of the images
LAYER_KINDS = ("structure", "texture")


@dataclass(frozen=True)
class Run:
    """One entry of the sweep plan: ``kind`` is ``"k"``, ``"vanilla"``,
    ``"vanilla-matched"``, ``"ensemble"``, or a layer model ``"structure"`` / ``"texture"``
    (the teachers of ``student="teachers"``)."""

    kind: str
    k: float | None
    seed: int

    @property
    def name(self) -> str:
        if self.kind == "k":
            return f"k{self.k:g}-seed{self.seed}"
        return f"{self.kind}-seed{self.seed}"


def parse_k_values(k_values: Iterable[float] | str) -> list[float]:
    """Check a k grid (or parse ``"0,0.5,1"``): non-empty, numbers in [0, 1], no repeats."""
    if isinstance(k_values, str):
        parts = [p.strip() for p in k_values.split(",") if p.strip()]
        try:
            k_values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"k values {k_values!r} are not comma-separated numbers") from None
    values = [float(k) for k in k_values]
    if not values:
        raise ValueError("the k grid is empty; give at least one k in [0, 1]")
    outside = [k for k in values if not 0.0 <= k <= 1.0]  # NaN fails this test too
    if outside:
        raise ValueError(f"k values must lie in [0, 1]; got {outside}")
    if len({round(k, 6) for k in values}) != len(values):
        raise ValueError(f"the k grid repeats a value: {values}")
    return values


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (the number of seeds per k), got {seeds}")
        return list(range(seeds))
    seed_list = [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be a count >= 1 or distinct integers, got {seeds!r}")
    return seed_list


def stratified_subset(manifest: Manifest, fraction: float, split: str = "train") -> list[str]:
    """A deterministic, stratified ``fraction`` of ``split``'s keys, from ``index.csv``.

    Within each class the keys are ordered by their SHA-1 digest (a stable pseudo-random
    order that does not depend on the shard layout) and the first ``ceil(fraction * n_c)``
    are kept. A class without samples in ``split`` is a ``ValueError``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction}")
    by_class = _keys_by_class(manifest, split)
    kept: list[str] = []
    for cls, name in enumerate(manifest.classes):
        keys = sorted(by_class.get(cls, []),
                      key=lambda key: hashlib.sha1(key.encode("utf-8")).hexdigest())
        count = math.ceil(fraction * len(keys))
        if count == 0:
            raise ValueError(f"train fraction {fraction} leaves class {name!r} empty: it has "
                             f"{len(keys)} sample(s) in split {split!r}")
        kept += keys[:count]
    return kept


def _keys_by_class(manifest: Manifest, split: str) -> dict[int, list[str]]:
    by_class: dict[int, list[str]] = {}
    for row in read_index(manifest.root):
        if row["split"] == split:
            by_class.setdefault(int(row["cls"]), []).append(row["key"])
    return by_class


def _plan(k_values: list[float], seeds: list[int], baseline: bool, ensemble: bool,
          matched: bool = False, layers: bool = False) -> list[Run]:
    runs = []
    for seed in seeds:
        if baseline:
            runs.append(Run("vanilla", None, seed))
        if matched:
            runs.append(Run("vanilla-matched", None, seed))
        if layers:  # before the k runs: their students learn from these
            runs += [Run(kind, None, seed) for kind in LAYER_KINDS]
        runs += [Run("k", k, seed) for k in k_values]
        if ensemble:
            runs.append(Run("ensemble", None, seed))
    return runs


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n",
                       encoding="utf-8")
    partial.replace(path)  # atomic: a kill never leaves a half-written result


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined numbers (a metric without samples, a diverged loss) are
    stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings in ``out``; a folder holding finished runs made with other
    settings is an error (their results would be mixed with these)."""
    path = out / SETTINGS_NAME
    if path.is_file() and any((out / "runs").glob(f"*/{RESULT_NAME}")):
        saved = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            raise ValueError(
                f"{out} holds a sweep with other settings ({', '.join(differ)} differ); "
                "resume with the same settings or choose another output folder"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(path, settings)


def _check_metrics(name: str, metrics: Any) -> dict[str, Any]:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"run {name}: train_fn must return a dict of metrics, "
                         f"got {type(metrics).__name__}")
    value = metrics.get(REQUIRED_METRIC)
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"run {name}: train_fn's metrics must hold {REQUIRED_METRIC!r}, a "
                         f"number in [0, 1]; got {value!r}")
    return dict(metrics)


class _Sweep:
    """The state one sweep shares between its runs."""

    def __init__(self, manifest: Manifest, keys: list[str] | None, settings: dict[str, Any],
                 out: Path, device: str, workers: int, train_fn: TrainFn | None,
                 init_weights: Path | None, log: Log, verbose: bool = True) -> None:
        self.manifest = manifest
        self.keys = keys
        # batches of a full pass over the whole training split: every run gets as many
        self.full_size = manifest.count("train")
        self.settings = settings
        self.out = out
        self.device = resolve_torch_device(device)
        self.workers = workers
        self.train_fn = train_fn
        self.init_weights = init_weights
        self.log = log
        self.verbose = verbose
        self.class_weights = None
        if settings["balance_classes"]:
            counts = _keys_by_class(manifest, "train")
            kept = set(keys) if keys is not None else None
            self.class_weights = balanced_class_weights(
                [sum(1 for key in counts.get(c, []) if kept is None or key in kept)
                 for c in range(manifest.num_classes)])
        self.val_loaders = {
            kind: make_eval_loader(
                str(manifest.root), kind=kind, split="val", batch_size=settings["batch_size"],
                image_size=settings["image_size"], num_workers=workers, seed=EVAL_SEED)
            for kind in ("clean", "conflict")
        }

    def val_loaders_of(self, run: Run) -> dict[str, Iterable]:
        """A layer model is judged on the same layer of the validation images (it has no
        cue-conflict metrics); every other run on the images and the composites."""
        if run.kind not in LAYER_KINDS:
            return self.val_loaders
        s = self.settings
        return {"clean": make_eval_loader(
            str(self.manifest.root), kind="clean", split="val", batch_size=s["batch_size"],
            image_size=s["image_size"], num_workers=self.workers, seed=EVAL_SEED,
            view=run.kind)}

    def run_dir(self, run: Run) -> Path:
        return self.out / "runs" / run.name

    def samples_per_epoch(self, run: Run) -> int | None:
        """The loader's epoch length: the full split's size for a subset with
        ``match_steps``; for the compute-matched vanilla run, the images an add-mode batch
        holds per original (``1 + round(p * B) / B``) times that."""
        s = self.settings
        batch = s["batch_size"]
        base = None
        if self.keys is not None and s["match_steps"]:
            # the loader yields full batches only: as many as a pass over the split has
            base = math.ceil(self.full_size / batch) * batch
        if run.kind != "vanilla-matched":
            return base
        views = (batch + round(s["p_conflict"] * batch)) / batch
        one_pass = len(self.keys) if self.keys is not None else self.full_size
        return round(views * (base if base is not None else one_pass))

    def build_model(self) -> torch.nn.Module:
        model = build_model(self.settings["model"], self.manifest.num_classes)
        return with_aux_bn(model) if self.settings["aux_bn"] else model

    def _loader(self, run: Run, view: str = "image", *, mixes: bool, with_info: bool
                ) -> Iterable:
        s = self.settings
        return make_loader(
            str(self.manifest.root), k=run.k if mixes else 1.0, split="train",
            batch_size=s["batch_size"], image_size=s["image_size"], num_workers=self.workers,
            seed=run.seed, p_conflict=s["p_conflict"] if mixes else 0.0,
            pairing=s["pairing"], min_scale=s["min_scale"], keys=self.keys,
            mode=s["mode"], alpha=s["alpha"], texture_layout=s["texture_layout"],
            tile_size=s["tile_size"], with_info=with_info,
            samples_per_epoch=self.samples_per_epoch(run), view=view)

    def train_loader(self, run: Run) -> Iterable:
        """The run's training batches: cue-conflict for a k run of the cue-conflict student,
        the teachers' targets for a k run of the teachers' student, originals (one-hot) for
        vanilla, one layer (one-hot) for a layer model."""
        aux = self.settings["aux_bn"]
        if run.kind in LAYER_KINDS:
            return self._loader(run, run.kind, mixes=False, with_info=aux)
        if run.kind != "k":
            return self._loader(run, mixes=False, with_info=aux)
        if self.settings["student"] == "cue-conflict":
            return self._loader(run, mixes=True, with_info=aux)
        views = [self._loader(run, view, mixes=False, with_info=True)
                 for view in ("image", *LAYER_KINDS)]
        return TeacherTargets(*views, *self._teachers(run.seed), k=run.k,
                              temperature=self.settings["temperature"], device=self.device)

    def _teachers(self, seed: int) -> list[torch.nn.Module]:
        """The structure and texture models of ``seed``, from their best checkpoints."""
        models = []
        for kind in LAYER_KINDS:
            path = self.run_dir(Run(kind, None, seed)) / CHECKPOINT_NAME
            if not path.is_file():
                raise FileNotFoundError(f"the {kind} teacher of seed {seed} has no checkpoint "
                                        f"({path}): its run failed or was removed")
            models.append(self.load_model(path))
        return models

    def load_model(self, path: Path) -> torch.nn.Module:
        model = self.build_model()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return model.to(self.device)

    def execute(self, run: Run) -> dict[str, Any]:
        start = time.perf_counter()
        if run.kind == "ensemble":
            result = self._ensemble(run)
        elif self.train_fn is None:
            result = self._train_builtin(run)
        else:
            seed_everything(run.seed)
            metrics = _check_metrics(run.name, self.train_fn(
                self.train_loader(run), self.val_loaders_of(run), run.k, run.seed))
            result = {"status": metrics.pop("status", "completed"),
                      "stop_reason": metrics.pop("stop_reason", ""),
                      "history": metrics.pop("history", []), "metrics": metrics}
        return {"name": run.name, "kind": run.kind, "k": run.k, "seed": run.seed, **result,
                "seconds": time.perf_counter() - start}

    def _train_builtin(self, run: Run) -> dict[str, Any]:
        s = self.settings
        seed_everything(run.seed)
        model = self.build_model()
        if self.init_weights is not None:
            load_init_weights(model, self.init_weights)
        config = TrainConfig(
            epochs=s["epochs"], lr=s["lr"], weight_decay=s["weight_decay"],
            optimizer=s["optimizer"], warmup_fraction=s["warmup_fraction"],
            label_smoothing=s["label_smoothing"], patience=s["patience"], seed=run.seed)
        checkpoint = self.run_dir(run) / CHECKPOINT_NAME
        checkpoint.unlink(missing_ok=True)  # from an attempt killed mid-run: not this run's
        epoch_log = (lambda m: self.log(f"  {run.name} {m}")) if self.verbose else None
        val_loaders = self.val_loaders_of(run)
        trained = fit(model, self.train_loader(run), val_loaders["clean"], config,
                      device=self.device, class_weights=self.class_weights,
                      checkpoint_path=checkpoint, log=epoch_log)
        metrics = (evaluate(model, val_loaders, self.device)
                   if trained.best_epoch is not None else {})
        return {"status": trained.status, "stop_reason": trained.stop_reason,
                "best_epoch": trained.best_epoch, "epochs_run": trained.epochs_run,
                "history": trained.history, "metrics": metrics,
                "checkpoint": CHECKPOINT_NAME if trained.best_epoch is not None else None}

    def _ensemble(self, run: Run) -> dict[str, Any]:
        members = [Run("k", 0.0, run.seed), Run("k", 1.0, run.seed)]
        models = []
        for member in members:
            path = self.run_dir(member) / CHECKPOINT_NAME
            if not path.is_file():
                return {"status": "skipped", "metrics": {}, "history": [],
                        "stop_reason": f"member {member.name} has no checkpoint"}
            models.append(self.load_model(path))
        return {"status": "completed", "stop_reason": "averaged probabilities of "
                + " and ".join(m.name for m in members), "history": [],
                "metrics": evaluate(models, self.val_loaders, self.device)}


def _finished_or_run(state: _Sweep, run: Run, label: str) -> dict[str, Any]:
    """The saved result of ``run``, or run it now and save its result."""
    path = state.run_dir(run) / RESULT_NAME
    if path.is_file():
        state.log(f"{label}: finished earlier, skipped")
        return json.loads(path.read_text(encoding="utf-8"))
    state.log(f"{label}: started")
    result = _finite_or_none(state.execute(run))
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, result)
    clean = result["metrics"].get(REQUIRED_METRIC)
    state.log(f"{label}: {result['status']}, clean_acc "
              f"{'n/a' if clean is None else f'{clean:.4f}'} ({result['seconds']:.1f} s)")
    return result


def _run_all(state: _Sweep, runs: list[Run], progress: bool) -> list[dict[str, Any]]:
    """Every run's result, in plan order, under a progress bar over the runs (with the
    overall ETA) when ``progress``; runs finished before count as done from the start."""
    finished = [(state.run_dir(run) / RESULT_NAME).is_file() for run in runs]
    results = []
    with tqdm(total=len(runs), initial=sum(finished), unit="run", desc="sweep",
              disable=not progress, dynamic_ncols=True) as bar:
        for i, (run, done) in enumerate(zip(runs, finished, strict=True), 1):
            bar.set_postfix_str(run.name, refresh=True)
            results.append(_finished_or_run(state, run, f"[{i}/{len(runs)}] {run.name}"))
            if not done:
                bar.update(1)
    return results


def sweep(
    shards: str | Path,
    k_values: Iterable[float] | str,
    *,
    seeds: int | Sequence[int] = 3,
    epochs: int = 10,
    train_fraction: float = 1.0,
    out: str | Path = "runs",
    device: str = "auto",
    model: str = "small",
    image_size: int = 64,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    optimizer: str = "adamw",
    warmup_fraction: float = 0.05,
    label_smoothing: float = 0.0,
    patience: int | None = 3,
    p_conflict: float = 0.5,
    pairing: str = "different-class",
    min_scale: float = 0.35,
    mode: str = "replace",
    alpha: float = 1.0,
    texture_layout: str = "aligned",
    tile_size: int = 16,
    aux_bn: bool = False,
    student: str = "cue-conflict",
    temperature: float = 1.0,
    matched_baseline: bool = False,
    match_steps: bool = True,
    balance_classes: bool = False,
    init_weights: str | Path | None = None,
    workers: int = 0,
    baseline: bool = True,
    ensemble: bool = True,
    train_fn: TrainFn | None = None,
    engine: str = "local",
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    log: Log | None = print,
    progress: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train and judge one model per (k, seed) on the shards in ``shards``; return the
    summary (also written to ``out/summary.json``, with ``results.csv``, ``sweep.png`` and
    ``report.md``).

    Parameters
    ----------
    shards : the shard folder (with ``manifest.json`` and ``index.csv``).
    k_values : the grid of label weights k in [0, 1] (a list or ``"0,0.5,1"``).
    seeds : how many seeds per k (0 .. seeds-1), or the seeds themselves.
    train_fraction : the share of each class of the training split to train on, a
        deterministic stratified subset (:func:`stratified_subset`).
    min_scale : the smallest share of an image's area the training crop covers (the
        random-resized crop of :func:`stexture.make_loader`; 1 crops only to change the
        aspect ratio). Raise it when objects fill only part of the frame, so that crops
        keep them.
    mode, alpha, texture_layout, tile_size : how composites are made and batched, as in
        :class:`stexture.mixing.CueConflictMix`: ``mode="add"`` keeps every original and
        appends ``round(p_conflict * batch_size)`` composites (Li et al.), ``alpha`` is the
        share of the donor's texture, ``texture_layout="shuffled"`` rearranges the donor's
        texture in ``tile_size`` tiles.
    aux_bn : the built-in trainer's models get auxiliary BatchNorm layers
        (:func:`stexture.training.aux_bn`) for the composites; evaluation uses the main
        ones. With a ``train_fn``, convert and route in it (see
        :mod:`stexture.training.aux_bn`).
    student : ``"cue-conflict"`` (the k runs train on cue-conflict batches) or ``"teachers"``
        (each seed also trains a structure-layer and a texture-layer model, and the k runs
        train students on the original images against the two models' blended predictions;
        see the module docstring). The teachers' student takes no composites: ``p_conflict``,
        ``mode``, ``alpha``, ``texture_layout``, ``tile_size`` and ``aux_bn`` do not apply.
    temperature : the teachers' softmax temperature ``tau`` (> 0) for ``student="teachers"``.
    matched_baseline : also train ``vanilla-matched`` per seed: vanilla shown as many
        images as a ``mode="add"`` run (epochs ``1 + round(p_conflict * B) / B`` times
        longer in samples), so that a gain of the add-mode runs is not just more compute.
    match_steps : with ``train_fraction < 1``, give every run as many optimiser steps per
        epoch as the full training split (see the module docstring); False: one pass over
        the subset per epoch.
    baseline : also train the vanilla baseline per seed (original images, one-hot labels).
    ensemble : with 0 and 1 in the grid and the built-in trainer, also judge the ensemble of
        the k=0 and k=1 models per seed (their averaged probabilities).
    train_fn : your own trainer, called as ``train_fn(train_loader, val_loaders, k, seed)``
        with ``val_loaders = {"clean": ..., "conflict": ...}`` (batches ``(x, y, info)``) and
        ``k=None`` for the vanilla baseline; it returns a dict with ``"clean_acc"`` (required,
        in [0, 1]) and optionally ``"shape_bias"``, ``"conflict_structure_acc"``,
        ``"conflict_texture_acc"``, ``"per_class_acc"`` (a list), ``"history"`` (a list of
        per-epoch dicts), ``"status"``, ``"stop_reason"`` and further numbers, which are
        recorded. :func:`stexture.training.evaluate` computes the metric keys for a model.
        torch is seeded with ``seed`` before each call. The model, optimiser and trainer
        settings of this function are not used then.
    engine : ``"local"`` runs one run after the other here; ``"ray"`` runs the trained runs
        as Ray Tune trials (:mod:`stexture.training.ray_tune`) on the cluster at ``address``
        with ``cpus_per_trial`` cores and ``gpus_per_trial`` GPUs (fractions allowed) each,
        then the ensembles and the report here. The results are the same; ``out`` must be
        on a file system every node shares.
    log : where progress lines go (``None`` for silence): one when the sweep starts, one
        when each run starts and ends, and (with ``verbose``) one per epoch of each run.
        With ``progress``, pass ``tqdm.write`` (or a function that calls it) so the lines
        print above the bar.
    progress : show a progress bar over all runs with the time left (tqdm, on stderr).
    verbose : also log a line per epoch of each run of the built-in trainer.

    Bad settings (an empty grid, k outside [0, 1], seeds < 1, a fraction outside (0, 1] or
    one that leaves a class empty, init weights that do not fit the model) raise
    ``ValueError``, missing shards or init weights ``FileNotFoundError``, before anything is
    trained.
    """
    log = log or (lambda message: None)
    k_list = parse_k_values(k_values)
    seed_list = _seed_list(seeds)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if batch_size < 1 or image_size < 8:
        raise ValueError(f"batch_size must be >= 1 and image_size >= 8, got {batch_size}, "
                         f"{image_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if aux_bn and train_fn is not None:
        raise ValueError("aux_bn is for the built-in trainer; with a train_fn, call "
                         "stexture.training.aux_bn and route the composites in it")
    if student not in STUDENTS:
        raise ValueError(f"unknown student {student!r}; expected one of {', '.join(STUDENTS)}")
    if not (0.0 < temperature < math.inf):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if student == "teachers" and (aux_bn or train_fn is not None):
        raise ValueError("student='teachers' trains its students and their teachers with the "
                         "built-in trainer on clean images: no aux_bn, no train_fn")
    if matched_baseline and mode != "add":
        raise ValueError("matched_baseline needs mode='add' (in replace mode vanilla already "
                         "sees as many images as the cue-conflict runs)")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; expected local or ray")
    if engine == "ray" and device == "cuda" and gpus_per_trial <= 0:
        raise ValueError("device cuda on the ray engine needs gpus_per_trial > 0 "
                         "(--gpus-per-trial 1, or 0.25 to share a GPU between four runs)")
    TrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                warmup_fraction=warmup_fraction, label_smoothing=label_smoothing,
                patience=patience).validate()
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train fraction must lie in (0, 1], got {train_fraction}")
    manifest = read_manifest(shards)
    manifest.shards("train"), manifest.shards("val")  # both splits must exist
    keys = stratified_subset(manifest, train_fraction) if train_fraction < 1.0 else None
    if keys is None and balance_classes:
        stratified_subset(manifest, 1.0)  # the class counts need index.csv, every class present
    if init_weights is not None:
        if train_fn is not None:
            raise ValueError("init_weights is for the built-in trainer; with a train_fn, "
                             "load the weights inside it")
        # a file that does not fit the model fails here, not in the first run
        load_init_weights(build_model(model, manifest.num_classes), init_weights)
    settings = {
        "shards": str(Path(shards).resolve()), "train_fraction": train_fraction,
        "trainer": "builtin" if train_fn is None else "train_fn", "epochs": epochs,
        "model": model, "image_size": image_size, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "optimizer": optimizer,
        "warmup_fraction": warmup_fraction, "label_smoothing": label_smoothing,
        "patience": patience, "p_conflict": p_conflict, "pairing": pairing, "min_scale": min_scale,
        "mode": mode, "alpha": alpha, "texture_layout": texture_layout, "tile_size": tile_size,
        "aux_bn": aux_bn, "student": student, "temperature": temperature,
        "match_steps": match_steps, "balance_classes": balance_classes,
        "init_weights": None if init_weights is None else str(Path(init_weights).resolve()),
    }
    out = Path(out)
    with_ensemble = ensemble and train_fn is None and 0.0 in k_list and 1.0 in k_list
    runs = _plan(k_list, seed_list, baseline, with_ensemble, matched_baseline,
                 layers=student == "teachers")
    state = _Sweep(manifest, keys, settings, out, device, workers, train_fn,
                   None if init_weights is None else Path(init_weights), log, verbose)
    state._loader(Run("k", k_list[0], seed_list[0]), mixes=True, with_info=False)  # checks
    _check_settings(out, settings)
    log(f"sweep: {len(runs)} runs ({len(k_list)} k x {len(seed_list)} seed(s)"
        f"{', vanilla' if baseline else ''}"
        f"{', compute-matched vanilla' if matched_baseline else ''}"
        f"{', structure and texture teachers' if student == 'teachers' else ''}"
        f"{', ensemble' if with_ensemble else ''}) on "
        f"{state.device}, {len(keys) if keys is not None else manifest.count('train')} "
        f"training images -> {out}")
    if engine == "ray":
        from .ray_tune import run_trials

        # a trial runs in another process and folder: it gets absolute paths
        make_state = partial(_Sweep, read_manifest(manifest.root.resolve()), keys, settings,
                             out.resolve(), device, workers, train_fn,
                             None if init_weights is None else Path(init_weights).resolve(),
                             log, verbose)
        trained = [run for run in runs if run.kind != "ensemble"
                   and not (state.run_dir(run) / RESULT_NAME).is_file()]
        # the teachers first: a student's trial loads them
        for phase in ([r for r in trained if r.kind in LAYER_KINDS],
                      [r for r in trained if r.kind not in LAYER_KINDS]):
            run_trials(make_state, phase, out, address=address, cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=gpus_per_trial, log=log)
    results = _run_all(state, runs, progress)
    summary = write_report(out, results, k_list, manifest.classes, settings)
    best = summary["best"]
    if best is not None:
        log(f"sweep: best k = {best['k']} (clean_acc {best['clean_acc_mean']:.4f}); "
            f"report in {out / 'report.md'}")
    return summary
