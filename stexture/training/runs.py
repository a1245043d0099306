"""The runs of a sweep and the state they share, for the local loop and Ray Tune trials.

:mod:`stexture.training.runner` checks the settings, plans the runs (:func:`plan_runs`) and
goes through them with :func:`run_all`; :mod:`stexture.training.ray_tune` trains the same
runs as trials, each calling :func:`finished_or_run` on a :class:`SweepState` of its own.
Either way a run writes ``OUT/runs/<name>/result.json`` (and its best checkpoint,
``best.pt``, beside it) as soon as it finishes, and a run whose result is there is skipped:
that is how a killed sweep resumes.

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
With ``labels="soft"`` a k run trains on the original images against
``k * s + (1 - k) * t`` pooled over each crop from the label maps ``stexture label`` stored
beside the shards (:mod:`stexture.shards.labels`): the same recipe with no teacher at
training time.

Optimiser steps: with ``train_fraction < 1`` and ``match_steps`` (the default) every epoch
still has as many batches as an epoch of the full training split (the loader's
``samples_per_epoch``; the subset is gone over again, freshly permuted), so a 40% run gets
the same number of optimiser steps and the same learning-rate schedule as the 100% run and
the comparison is one of data, not of training budget.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..loader import make_eval_loader, make_loader
from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from .aux_bn import aux_bn as with_aux_bn
from .config import SweepConfig
from .crossfit import DEFAULT_FOLDS, assign_folds, training_keys
from .models import build_model
from .report import REQUIRED_METRIC
from .teachers import TeacherTargets
from .trainer import (
    Log,
    balanced_class_weights,
    evaluate,
    fit,
    load_init_weights,
    resolve_torch_device,
    seed_everything,
)

__all__ = ["CHECKPOINT_NAME", "FOLD_KINDS", "LAYER_KINDS", "RESULT_NAME", "Run", "SweepState",
           "TrainFn", "layer_of",
           "finished_or_run", "plan_runs", "run_all", "trial_phases",
           "write_json"]

TrainFn = Callable[[Iterable, Mapping[str, Iterable], "float | None", int], Mapping[str, Any]]
RESULT_NAME = "result.json"
CHECKPOINT_NAME = "best.pt"
# the cue-conflict validation set is drawn with this seed in every run, so all runs are
# judged on the same images
EVAL_SEED = 0
# the teacher runs of student="teachers": each trains on one layer view of the images
LAYER_KINDS = ("structure", "texture")
# the students' teachers are cross-fitted (crossfit.py): per layer, one model per fold,
# trained on the training keys outside its fold, labels the samples of its fold; the
# whole-split layer models above stay the structure and texture arms
TEACHER_FOLDS = DEFAULT_FOLDS
FOLD_KINDS = tuple(f"{kind}-fold{fold}" for kind in LAYER_KINDS for fold in range(TEACHER_FOLDS))


def layer_of(kind: str) -> str | None:
    """The layer view a run of ``kind`` trains on (a layer model or a fold teacher), else
    None."""
    view = kind.split("-fold")[0]
    return view if view in LAYER_KINDS and (kind == view or kind in FOLD_KINDS) else None


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


def plan_runs(config: SweepConfig, *, builtin: bool) -> list[Run]:
    """The sweep's runs in the order they are trained, seed by seed: vanilla,
    vanilla-matched, the layer teachers (before the k runs: their students learn from them),
    the k runs, the ensemble (with the ``builtin`` trainer and 0 and 1 in the grid)."""
    ensemble = config.ensemble and builtin and {0.0, 1.0} <= set(config.k_values)
    runs = []
    for seed in config.seed_list:
        if config.baseline:
            runs.append(Run("vanilla", None, seed))
        if config.matched_baseline:
            runs.append(Run("vanilla-matched", None, seed))
        if config.student == "teachers":
            runs += [Run(kind, None, seed) for kind in (*LAYER_KINDS, *FOLD_KINDS)]
        runs += [Run("k", k, seed) for k in config.k_values]
        if ensemble:
            runs.append(Run("ensemble", None, seed))
    return runs


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON in ``path`` (numpy and torch scalars and arrays as numbers
    and lists), written to ``path.partial`` first and then renamed."""
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


def _check_metrics(name: str, metrics: Any) -> dict[str, Any]:
    if not isinstance(metrics, Mapping):
        raise ValueError(f"run {name}: train_fn must return a dict of metrics, "
                         f"got {type(metrics).__name__}")
    value = metrics.get(REQUIRED_METRIC)
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"run {name}: train_fn's metrics must hold {REQUIRED_METRIC!r}, a "
                         f"number in [0, 1]; got {value!r}")
    return dict(metrics)


class SweepState:
    """The state one sweep shares between its runs: the shards (``keys``: the training
    subset, None for the whole split), the settings, the output folder, the validation
    loaders and the class weights. A Ray Tune trial builds its own from the same arguments
    (with absolute paths: a trial does not run in the driver's folder)."""

    def __init__(self, shards: ShardFolder | Manifest, keys: list[str] | None,
                 config: SweepConfig, out: Path, device: str, workers: int,
                 train_fn: TrainFn | None, log: Log, verbose: bool = True) -> None:
        # the one opened folder the loaders, the subset and the class weights share
        self.shards = ShardFolder.open(shards)
        manifest = self.manifest = self.shards.manifest
        self.keys = keys
        # batches of a full pass over the whole training split: every run gets as many
        self.full_size = manifest.count("train")
        self.config = config
        self.out = out
        self.device = resolve_torch_device(device)
        self.workers = workers
        self.train_fn = train_fn
        self.log = log
        self.verbose = verbose
        self.class_weights = None
        if config.balance_classes:
            counts = self.shards.keys_by_class("train")
            kept = set(keys) if keys is not None else None
            self.class_weights = balanced_class_weights(
                [sum(1 for key in counts.get(c, []) if kept is None or key in kept)
                 for c in range(manifest.num_classes)])
        self.val_loaders = {kind: self._val_loader(kind) for kind in ("clean", "conflict")}

    def _val_loader(self, kind: str, view: str = "image") -> Iterable:
        c = self.config
        return make_eval_loader(
            self.shards, kind=kind, split="val", batch_size=c.batch_size,
            image_size=c.image_size, num_workers=self.workers, seed=EVAL_SEED, view=view)

    def val_loaders_of(self, run: Run) -> dict[str, Iterable]:
        """A layer model is judged on the same layer of the validation images (it has no
        cue-conflict metrics); every other run on the images and the composites."""
        if layer_of(run.kind) is None:
            return self.val_loaders
        return {"clean": self._val_loader("clean", view=layer_of(run.kind))}

    def is_student(self, run: Run) -> bool:
        """Whether ``run`` learns from teachers (a k run of ``student="teachers"``)."""
        return run.kind == "k" and self.config.student == "teachers"

    def run_dir(self, run: Run) -> Path:
        return self.out / "runs" / run.name

    def samples_per_epoch(self, run: Run) -> int | None:
        """The loader's epoch length: the full split's size for a subset with
        ``match_steps``; for the compute-matched vanilla run, the images an add-mode batch
        holds per original (``1 + round(p * B) / B``) times that."""
        batch = self.config.batch_size
        base = None
        if self.keys is not None and self.config.match_steps:
            # the loader yields full batches only: as many as a pass over the split has
            base = math.ceil(self.full_size / batch) * batch
        if run.kind != "vanilla-matched":
            return base
        views = (batch + round(self.config.p_conflict * batch)) / batch
        one_pass = len(self.keys) if self.keys is not None else self.full_size
        return round(views * (base if base is not None else one_pass))

    def build_model(self) -> torch.nn.Module:
        model = build_model(self.config.model, self.manifest.num_classes)
        return with_aux_bn(model) if self.config.aux_bn else model

    def check_loader(self, run: Run) -> None:
        """Build ``run``'s cue-conflict (or soft-label) loader, so that what only the shards
        can tell (the subset's keys in the split, at least one batch per epoch, a label set
        with labels for every sample) fails before training."""
        if self.config.labels == "soft":
            self._soft_loader(run)
        else:
            self._loader(run, mixes=True, with_info=False)

    def _soft_loader(self, run: Run) -> Iterable:
        """Originals with ``y = k s + (1 - k) t`` from the stored label maps."""
        c = self.config
        return make_loader(
            self.shards, k=run.k, split="train", batch_size=c.batch_size,
            image_size=c.image_size, num_workers=self.workers, seed=run.seed, p_conflict=0.0,
            min_scale=c.min_scale, keys=self.keys, samples_per_epoch=self.samples_per_epoch(run),
            labels="soft", label_set=c.label_set)

    def teacher_folds(self) -> dict[str, int]:
        """The fold of every training key (of the subset, if any), stratified by class
        (:func:`stexture.training.crossfit.assign_folds`)."""
        kept = set(self.keys) if self.keys is not None else None
        strata = {key: c for c, keys in self.shards.keys_by_class("train").items()
                  for key in keys if kept is None or key in kept}
        return assign_folds(strata, TEACHER_FOLDS)

    def _fold_keys(self, run: Run) -> list[str] | None:
        """A fold teacher's training keys (those outside its fold); the sweep's otherwise."""
        if run.kind not in FOLD_KINDS:
            return self.keys
        folds = self.teacher_folds()
        return training_keys(folds, int(run.kind.rsplit("fold", 1)[1]), folds)

    def _loader(self, run: Run, view: str = "image", *, mixes: bool, with_info: bool
                ) -> Iterable:
        c = self.config
        return make_loader(
            self.shards, k=run.k if mixes else 1.0, split="train",
            batch_size=c.batch_size, image_size=c.image_size, num_workers=self.workers,
            seed=run.seed, p_conflict=c.p_conflict if mixes else 0.0,
            pairing=c.pairing, min_scale=c.min_scale, keys=self._fold_keys(run),
            mode=c.mode, alpha=c.alpha, texture_layout=c.texture_layout,
            tile_size=c.tile_size, with_info=with_info,
            samples_per_epoch=self.samples_per_epoch(run), view=view)

    def train_loader(self, run: Run) -> Iterable:
        """The run's training batches: cue-conflict for a k run of the cue-conflict student,
        the teachers' targets for a k run of the teachers' student, originals (one-hot) for
        vanilla, one layer (one-hot) for a layer model."""
        aux = self.config.aux_bn
        if layer_of(run.kind) is not None:
            return self._loader(run, layer_of(run.kind), mixes=False, with_info=aux)
        if run.kind != "k":
            return self._loader(run, mixes=False, with_info=aux)
        if self.config.labels == "soft":
            return self._soft_loader(run)
        if self.config.student == "cue-conflict":
            return self._loader(run, mixes=True, with_info=aux)
        views = [self._loader(run, view, mixes=False, with_info=True)
                 for view in ("image", *LAYER_KINDS)]
        return TeacherTargets(*views, *self._teachers(run.seed), k=run.k,
                              temperature=self.config.temperature, device=self.device,
                              folds=self.teacher_folds())

    def _teachers(self, seed: int) -> list[list[torch.nn.Module]]:
        """The cross-fitted structure and texture teachers of ``seed`` (one per fold each),
        from their best checkpoints."""
        models = []
        for kind in LAYER_KINDS:
            models.append([])
            for fold in range(TEACHER_FOLDS):
                path = self.run_dir(Run(f"{kind}-fold{fold}", None, seed)) / CHECKPOINT_NAME
                if not path.is_file():
                    raise FileNotFoundError(f"the {kind} teacher of fold {fold}, seed {seed} "
                                            f"has no checkpoint ({path}): its run failed or "
                                            "was removed")
                models[-1].append(self.load_model(path))
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
        seed_everything(run.seed)
        model = self.build_model()
        if self.config.init_weights is not None:
            load_init_weights(model, self.config.init_weights)
        checkpoint = self.run_dir(run) / CHECKPOINT_NAME
        checkpoint.unlink(missing_ok=True)  # from an attempt killed mid-run: not this run's
        epoch_log = (lambda m: self.log(f"  {run.name} {m}")) if self.verbose else None
        val_loaders = self.val_loaders_of(run)
        trained = fit(model, self.train_loader(run), val_loaders["clean"],
                      self.config.train_config(run.seed, student=self.is_student(run)),
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


def finished_or_run(state: SweepState, run: Run, label: str) -> dict[str, Any]:
    """The saved result of ``run``, or run it now and save its result."""
    path = state.run_dir(run) / RESULT_NAME
    if path.is_file():
        state.log(f"{label}: finished earlier, skipped")
        return json.loads(path.read_text(encoding="utf-8"))
    state.log(f"{label}: started")
    result = _finite_or_none(state.execute(run))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    clean = result["metrics"].get(REQUIRED_METRIC)
    state.log(f"{label}: {result['status']}, clean_acc "
              f"{'n/a' if clean is None else f'{clean:.4f}'} ({result['seconds']:.1f} s)")
    return result


def run_all(state: SweepState, runs: list[Run], progress: bool) -> list[dict[str, Any]]:
    """Every run's result, in plan order, under a progress bar over the runs (with the
    overall ETA) when ``progress``; runs finished before count as done from the start."""
    finished = [(state.run_dir(run) / RESULT_NAME).is_file() for run in runs]
    results = []
    with tqdm(total=len(runs), initial=sum(finished), unit="run", desc="sweep",
              disable=not progress, dynamic_ncols=True) as bar:
        for i, (run, done) in enumerate(zip(runs, finished, strict=True), 1):
            bar.set_postfix_str(run.name, refresh=True)
            results.append(finished_or_run(state, run, f"[{i}/{len(runs)}] {run.name}"))
            if not done:
                bar.update(1)
    return results


def trial_phases(state: SweepState, runs: list[Run]) -> list[list[Run]]:
    """The runs still to train (no result yet, not an ensemble, which only evaluates), in
    the phases an engine that runs them at once must keep: the layer teachers before the
    students that load them."""
    trained = [run for run in runs if run.kind != "ensemble"
               and not (state.run_dir(run) / RESULT_NAME).is_file()]
    return [[run for run in trained if layer_of(run.kind) is not None],
            [run for run in trained if layer_of(run.kind) is None]]
