"""The Ray engine of ``stexture decompose``: the same plan and shards as the local engine,
with the scan and every shard a Ray task, on one machine or a cluster.

It is an :class:`~stexture.shards.engine.Executor` of the driver loop
:func:`~stexture.shards.engine.drive`, which makes the plan in the driver (its per-image
scan runs here as Ray tasks of 32 images), records each shard as it finishes in the
progress file, and assembles the manifest, exactly as for the local engine: the engine
enters neither the settings nor the shards, which are byte-identical to a local run's with
the same arguments. Each pending shard job is one Ray task (a *slice* of the input, named
after its shard) that calls :func:`~stexture.shards.write.write_shard`.

A task that raises or whose worker dies is retried by Ray (``max_retries``). A slice that
still fails does not stop the others; when all have ended,
:class:`~stexture.shards.engine.DecomposeFailed` names every failed slice with its error,
the good shards stay recorded, and the same command run again resumes with only the failed
ones.

Every worker must reach ``src`` and ``out``: on a cluster, a shared file system or an fsspec
URL (``s3://bucket/prefix``, see :mod:`.storage`). Ray is imported only when this engine
runs (``pip install 'stexture[ray]'``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .._ray import cancel_unfinished, connect, error_line, import_ray
from . import storage
from .engine import DecomposeFailed, ShardFailure, drive
from .output import WriteSummary
from .plan import ShardJob, ShardSettings
from .write import ShardResult, write_shard

__all__ = ["DecomposeFailed", "write_dataset_ray"]


# ---------------------------------------------------------------- worker side


def _limit_threads(cpus: float) -> None:
    """As many Numba threads as the task reserved cores, so tasks do not oversubscribe."""
    import cv2
    import numba

    cv2.setNumThreads(1)
    numba.set_num_threads(max(1, min(int(cpus), numba.config.NUMBA_NUM_THREADS)))


def _scan_chunk(fn: Callable, chunk: list, cpus: float) -> Any:
    _limit_threads(cpus)
    return fn(chunk)


def _write_slice(job: ShardJob, settings: ShardSettings, out: str, cpus: float) -> ShardResult:
    _limit_threads(cpus)
    return write_shard(job, settings, out)


# ---------------------------------------------------------------- driver side


class _RayTasks:
    def __init__(self, cpus: float, gpus: float, max_retries: int) -> None:
        ray = import_ray()
        self.ray = ray
        self.cpus = cpus
        self.retries = max_retries
        options: dict[str, Any] = {"max_retries": max_retries, "retry_exceptions": True}
        # storage options given to this process (stexture decompose --storage-option) reach
        # the tasks also on a cluster started before them (whose workers have their own env)
        shared = os.environ.get(storage.STORAGE_OPTIONS_VARIABLE)
        if shared:
            options["runtime_env"] = {"env_vars": {storage.STORAGE_OPTIONS_VARIABLE: shared}}
        self.scan = ray.remote(_scan_chunk).options(num_cpus=cpus, **options)
        self.write = ray.remote(_write_slice).options(num_cpus=cpus, num_gpus=gpus, **options)
        self.refs: list[Any] = []

    def reach(self, loc: storage.Location) -> storage.Location:
        """Ray workers do not run in the driver's folder: they get absolute paths."""
        return loc.resolve() if isinstance(loc, Path) else loc

    def map(self, fn: Callable, chunks: Iterable) -> Iterator:
        """``map`` over Ray tasks, results in order."""
        self.refs = [self.scan.remote(fn, chunk, self.cpus) for chunk in chunks]
        for ref in self.refs:
            yield self.ray.get(ref)

    def run(self, jobs: list[ShardJob], settings: ShardSettings, out: storage.Location,
            progress: Callable[[int], None]) -> Iterator[ShardResult | ShardFailure]:
        """Each job's result, or its failure after Ray's retries, as it finishes."""
        settings_ref = self.ray.put(settings)
        name_of = {}
        for job in jobs:
            ref = self.write.remote(job, settings_ref, str(out), self.cpus)
            name_of[ref] = job.name
        self.refs = list(name_of)
        pending = list(self.refs)
        while pending:
            finished, pending = self.ray.wait(pending, num_returns=1)
            for ref in finished:
                try:
                    result = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    yield ShardFailure(name_of[ref], error_line(exc))
                    continue
                progress(result.count)
                yield result

    def stop(self) -> None:
        cancel_unfinished(self.refs)

    def close(self) -> None:
        """The tasks have ended; the cluster connection is the caller's."""


def write_dataset_ray(
    src: str | Path,
    out: str | Path,
    settings: ShardSettings,
    *,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float | None = None,
    max_retries: int = 3,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> WriteSummary:
    """Decompose the images under ``src`` into shards in ``out`` with Ray tasks.

    Parameters
    ----------
    src, out : local paths every worker can reach (a shared file system), or fsspec URLs.
    settings : the content settings, as for the local engine.
    address : the Ray cluster (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``);
        ``None`` joins the cluster this process is connected to, else ``RAY_ADDRESS``, else
        starts a local one. A cluster joined here is left again at the end.
    cpus_per_task : cores reserved per task (and Numba threads inside it).
    gpus_per_task : GPUs reserved per shard task, fractions allowed; ``None`` is 1 with
        ``settings.device == "cuda"``, else 0.
    max_retries : how often Ray runs a failed task again before its slice counts as failed.

    Returns the same :class:`~stexture.shards.output.WriteSummary` as the local engine. Raises
    :class:`DecomposeFailed` naming each slice that kept failing (after every other slice
    has ended and been recorded), and :class:`~stexture.shards.engine.DecomposeInterrupted`
    on Ctrl-C; either way, the same call again resumes.
    """
    if cpus_per_task <= 0:
        raise ValueError(f"cpus per task must be > 0, got {cpus_per_task}")
    if gpus_per_task is None:
        gpus_per_task = 1.0 if settings.device == "cuda" else 0.0
    if gpus_per_task < 0:
        raise ValueError(f"gpus per task must be >= 0, got {gpus_per_task}")
    if max_retries < 0:
        raise ValueError(f"max retries must be >= 0, got {max_retries}")
    connected = connect(address)
    try:
        return drive(src, out, settings,
                     _RayTasks(cpus_per_task, gpus_per_task, max_retries),
                     overwrite=overwrite, show_progress=show_progress, log=log)
    finally:
        if connected:
            import_ray().shutdown()
