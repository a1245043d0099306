"""The sweep's training runs as Ray Tune trials, one per (k, seed) and vanilla run.

Each trial builds the sweep's state in its own process and runs exactly what the local sweep
runs (:func:`stexture.training.runs.finished_or_run`), so it writes the same
``OUT/runs/<name>/result.json`` and ``best.pt``. The driver then goes through the runs as a
local sweep does: it finds every trained run finished, computes the k=0 / k=1 ensembles from
their checkpoints (evaluation only) and writes the same report files. A sweep cut short
resumes the same way, and ``OUT`` must be reachable by every node (a shared file system).

Per-trial resources come from ``cpus_per_trial`` and ``gpus_per_trial``; fractional GPUs let
several small runs share one GPU (Tune starts as many trials at once as the resources allow).
Tune's own records (trial logs, errors) go to ``OUT/tune``. Ray is imported only here, when
``engine="ray"`` is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._ray import connect, error_line, import_ray
from .runs import Run, SweepState, finished_or_run

__all__ = ["TUNE_DIR", "run_trials"]

TUNE_DIR = "tune"
# a trial that raises is started again this many times before the sweep reports it
MAX_FAILURES = 1


def _trial(config: dict[str, Any], make_state: Callable[[], SweepState],
           runs: dict[str, Run]) -> None:
    from ray import tune

    run = runs[config["run"]]
    result = finished_or_run(make_state(), run, run.name)
    metrics = {key: value for key, value in result["metrics"].items()
               if isinstance(value, (int, float)) and math.isfinite(value)}
    tune.report({**metrics, "status": result["status"]})


def run_trials(make_state: Callable[[], SweepState], runs: Sequence[Run], out: str | Path, *,
               address: str | None = None, cpus_per_trial: float = 1.0,
               gpus_per_trial: float = 0.0, log: Callable[[str], None] = print) -> None:
    """Train ``runs`` as Tune trials; their results land in ``OUT/runs/<name>/``.

    ``make_state()`` builds the sweep state inside a trial (picklable, with absolute paths:
    a trial does not run in the driver's folder). ``address`` is the Ray cluster (``None``:
    the one this process is connected to, else ``RAY_ADDRESS``, else a new local one).
    Raises ``RuntimeError`` naming every run whose trial kept failing; the runs that
    finished keep their results, so the same sweep started again resumes.
    """
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ValueError(f"cpus per trial must be > 0 and gpus per trial >= 0, got "
                         f"{cpus_per_trial} and {gpus_per_trial}")
    if not runs:
        return
    ray = import_ray()
    from ray import tune

    connected = connect(address)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trial, make_state=make_state,
                                 runs={run.name: run for run in runs}),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        log(f"sweep: {len(runs)} trial(s) on Ray Tune, {cpus_per_trial:g} CPU and "
            f"{gpus_per_trial:g} GPU each")
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search([run.name for run in runs])},
            run_config=tune.RunConfig(
                name="sweep", storage_path=str(Path(out).resolve() / TUNE_DIR), verbose=0,
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
        )
        failed = {result.config["run"]: error_line(result.error)
                  for result in tuner.fit() if result.error is not None}
    finally:
        if connected:
            ray.shutdown()
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) failed on Ray Tune (after {MAX_FAILURES} retry): "
            + "; ".join(f"{name}: {error}" for name, error in sorted(failed.items()))
            + f"; their logs are in {Path(out) / TUNE_DIR}; the finished runs are kept, "
            "run the same sweep again to resume")
