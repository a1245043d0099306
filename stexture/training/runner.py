"""The k sweep: train one model per (k, seed), a vanilla baseline per seed and the k=0 / k=1
ensemble per seed, then report which k gives the best clean validation accuracy.

The settings are one :class:`~stexture.training.config.SweepConfig`, the second argument of
:func:`sweep`; its keywords say only where and how fast the sweep runs. :func:`sweep` checks
them and the shards, plans the runs, trains
them here one after the other or as Ray Tune trials (:mod:`stexture.training.ray_tune`),
then judges the ensembles and writes the report. :mod:`stexture.training.runs` names the
runs and says how each is trained.

Every run's result is written to ``OUT/runs/<name>/result.json`` (and its best checkpoint to
``best.pt`` beside it) as soon as the run finishes, so a sweep that is killed and started
again with the same settings skips the finished runs. ``OUT/sweep.json`` records the
settings (:meth:`SweepConfig.to_settings`); a restart with different settings into the same
folder is an error. The plan (k grid, seeds, extra arms) is not part of them: a finished
sweep can be extended with more seeds or k values.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ..shards.folder import ShardFolder
from ..shards.format import Manifest
from .config import STUDENTS, SweepConfig, check_train_fraction, parse_k_values
from .models import build_model
from .ray_tune import run_trials
from .report import write_report
from .runs import (
    RESULT_NAME,
    Run,
    SweepState,
    TrainFn,
    plan_runs,
    run_all,
    trial_phases,
    write_json,
)
from .trainer import Log, load_init_weights

__all__ = ["STUDENTS", "SweepConfig", "TrainFn", "parse_k_values", "stratified_subset",
           "sweep"]

SETTINGS_NAME = "sweep.json"


def stratified_subset(shards: ShardFolder | Manifest | str | Path, fraction: float,
                      split: str = "train") -> list[str]:
    """A deterministic, stratified ``fraction`` of ``split``'s keys, from ``index.csv``.

    Within each class the keys are ordered by their SHA-1 digest (a stable pseudo-random
    order that does not depend on the shard layout) and the first ``ceil(fraction * n_c)``
    are kept.

    Parameters
    ----------
    shards : ShardFolder, Manifest, str or Path
        The shard folder (opened, or its manifest, or its path).
    fraction : float in (0, 1]
        The share of each class to keep.
    split : str
        The split whose keys are drawn.

    Returns
    -------
    list of str
        The kept keys, class by class.

    Raises
    ------
    ValueError
        A fraction outside (0, 1], or a class left without samples in ``split``.
    """
    check_train_fraction(fraction)
    shards = ShardFolder.open(shards)
    by_class = shards.keys_by_class(split)
    kept: list[str] = []
    for cls, name in enumerate(shards.classes):
        keys = sorted(by_class.get(cls, []),
                      key=lambda key: hashlib.sha1(key.encode("utf-8")).hexdigest())
        count = math.ceil(fraction * len(keys))
        if count == 0:
            raise ValueError(f"train fraction {fraction} leaves class {name!r} empty: it has "
                             f"{len(keys)} sample(s) in split {split!r}")
        kept += keys[:count]
    return kept


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
        write_json(path, settings)


def _config_of(config: SweepConfig | None) -> SweepConfig:
    """``config``, the defaults when ``None``; a ``TypeError`` for anything else (a k grid
    where the config goes, as the sweep took once)."""
    if config is None:
        return SweepConfig()
    if not isinstance(config, SweepConfig):
        raise TypeError(f"the sweep's second argument is a SweepConfig, got "
                        f"{type(config).__name__}: sweep(shards, SweepConfig(k_values=[0, 1], "
                        "seeds=2), out=...)")
    return config


def sweep(
    shards: str | Path | ShardFolder,
    config: SweepConfig | None = None,
    *,
    out: str | Path = "runs",
    device: str = "auto",
    workers: int = 0,
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
    shards : str, Path or ShardFolder
        The shard folder (with ``manifest.json`` and ``index.csv``), or the
        :class:`~stexture.shards.ShardFolder` it was opened as. It is opened once; the
        training subset, every run's loaders and the report share it.
    config : SweepConfig, optional
        Every setting that decides the runs and their results: the k grid, seeds, trainer,
        mixing, arms (:class:`~stexture.training.config.SweepConfig`, e.g.
        ``SweepConfig(k_values=[0, 0.5, 1], seeds=3, mode="add")``); ``None``: its defaults.
    out : str or Path
        The output folder; run the same sweep into it again to resume.
    device : {"auto", "cpu", "cuda"}
        Where to train (``"auto"``: the GPU when there is one).
    workers : int
        Data loader worker processes per run (they change how fast, not what).
    train_fn : callable, optional
        Your own trainer, called as ``train_fn(train_loader, val_loaders, k, seed)`` with
        ``val_loaders = {"clean": ..., "conflict": ...}`` (batches ``(x, y, info)``) and
        ``k=None`` for the vanilla baseline; it returns a dict with ``"clean_acc"``
        (required, in [0, 1]) and optionally ``"shape_bias"``, ``"conflict_structure_acc"``,
        ``"conflict_texture_acc"``, ``"per_class_acc"`` (a list), ``"history"`` (a list of
        per-epoch dicts), ``"status"``, ``"stop_reason"`` and further numbers, which are
        recorded. :func:`stexture.training.evaluate` computes the metric keys for a model.
        torch is seeded with ``seed`` before each call. The model, optimiser and trainer
        settings of the config are not used then.
    engine : {"local", "ray"}
        ``"local"`` runs one run after the other here; ``"ray"`` runs the trained runs as
        Ray Tune trials (:mod:`stexture.training.ray_tune`) on the cluster at ``address``
        with ``cpus_per_trial`` cores and ``gpus_per_trial`` GPUs (fractions allowed) each,
        then the ensembles and the report here. The results are the same; ``out`` must be
        on a file system every node shares.
    address : str, optional
        The Ray cluster's address for ``engine="ray"`` (``"auto"``: the one this node is in).
    cpus_per_trial, gpus_per_trial : float
        Resources of each Ray Tune trial.
    log : callable, optional
        Where progress lines go (``None`` for silence): one when the sweep starts, one
        when each run starts and ends, and (with ``verbose``) one per epoch of each run.
        With ``progress``, pass ``tqdm.write`` (or a function that calls it) so the lines
        print above the bar.
    progress : bool
        Show a progress bar over all runs with the time left (tqdm, on stderr).
    verbose : bool
        Also log a line per epoch of each run of the built-in trainer.

    Returns
    -------
    dict
        The summary written to ``out/summary.json``.

    Raises
    ------
    ValueError, FileNotFoundError, TypeError
        Bad settings (an empty grid, k outside [0, 1], seeds < 1, a fraction outside
        (0, 1] or one that leaves a class empty, init weights that do not fit the model)
        raise ``ValueError``, missing shards or init weights ``FileNotFoundError``, before
        anything is trained (the config's own checks run when it is made); a ``config``
        that is not a :class:`~stexture.training.config.SweepConfig`, ``TypeError``.
    """
    log = log or (lambda message: None)
    config = _config_of(config)
    config.check_train_fn(train_fn is not None)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; expected local or ray")
    if engine == "ray" and device == "cuda" and gpus_per_trial <= 0:
        raise ValueError("device cuda on the ray engine needs gpus_per_trial > 0 "
                         "(--gpus-per-trial 1, or 0.25 to share a GPU between four runs)")
    # opened once: the subset, the runs, their loaders and the report share it
    folder = ShardFolder.open(shards)
    manifest = folder.manifest
    manifest.shards("train"), manifest.shards("val")  # both splits must exist
    keys = (stratified_subset(folder, config.train_fraction)
            if config.train_fraction < 1.0 else None)
    if keys is None and config.balance_classes:
        stratified_subset(folder, 1.0)  # the class counts need index.csv, every class present
    if config.init_weights is not None:
        # absolute: a Ray Tune trial runs in another folder
        config = replace(config, init_weights=config.init_weights.resolve())
        # a file that does not fit the model fails here, not in the first run
        load_init_weights(build_model(config.model, manifest.num_classes), config.init_weights)
    settings = config.to_settings(folder.root, "builtin" if train_fn is None else "train_fn")
    out = Path(out)
    runs = plan_runs(config, builtin=train_fn is None)
    state = SweepState(folder, keys, config, out, device, workers, train_fn, log, verbose)
    state.check_loader(Run("k", config.k_values[0], config.seed_list[0]))
    _check_settings(out, settings)
    log(f"sweep: {len(runs)} runs ({len(config.k_values)} k x {len(config.seed_list)} seed(s)"
        f"{', vanilla' if config.baseline else ''}"
        f"{', compute-matched vanilla' if config.matched_baseline else ''}"
        f"{', structure and texture teachers' if config.student == 'teachers' else ''}"
        f"{', ensemble' if any(run.kind == 'ensemble' for run in runs) else ''}) on "
        f"{state.device}, {len(keys) if keys is not None else manifest.count('train')} "
        f"training images -> {out}")
    if engine == "ray":
        # a trial runs in another process and folder: it gets absolute paths
        make_state = partial(SweepState, folder.resolved(), keys, config, out.resolve(),
                             device, workers, train_fn, log, verbose)
        for phase in trial_phases(state, runs):
            run_trials(make_state, phase, out, address=address, cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=gpus_per_trial, log=log)
    results = run_all(state, runs, progress)
    summary = write_report(out, results, list(config.k_values), folder.classes, settings)
    best = summary["best"]
    if best is not None:
        log(f"sweep: best k = {best['k']} (clean_acc {best['clean_acc_mean']:.4f}); "
            f"report in {out / 'report.md'}")
    return summary
