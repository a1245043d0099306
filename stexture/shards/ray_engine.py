"""The Ray engine of ``stexture decompose``: the same plan and shards as the local engine,
with the scan and every shard a Ray task, on one machine or a cluster.

The phases are those of :mod:`stexture.shards.writer`. The plan is made here in the driver
(its per-image scan runs as Ray tasks of 32 images), so the shard jobs, keys and splits are
the local engine's. Each pending shard job is then one Ray task (a *slice* of the input,
named after its shard) that calls :func:`~stexture.shards.writer.write_shard`; as each
finishes, the driver records it in the progress file, so an interrupted or failed run
resumes like a local one. The manifest is assembled by the driver at the end, exactly as
the local engine does: the engine enters neither the settings nor the shards, which are
byte-identical to a local run's with the same arguments.

A task that raises or whose worker dies is retried by Ray (``max_retries``). A slice that
still fails does not stop the others; when all have ended, :class:`DecomposeFailed` names
every failed slice with its error, the good shards stay recorded, and the same command run
again resumes with only the failed ones.

Every worker must reach ``src`` and ``out``: on a cluster, a shared file system or an fsspec
URL (``s3://bucket/prefix``, see :mod:`.storage`). Ray is imported only when this engine
runs (``pip install 'stexture[ray]'``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .._ray import cancel_unfinished, connect, error_line, import_ray
from . import storage
from .local import _bar, _scan, interrupted, open_for_resume
from .writer import (
    Plan,
    Settings,
    ShardJob,
    ShardResult,
    Summary,
    finish_dataset,
    record_shard,
    write_shard,
)

__all__ = ["DecomposeFailed", "write_dataset_ray"]


class DecomposeFailed(RuntimeError):
    """Slices that kept failing after Ray's retries; ``failures`` maps each slice's name to
    its error. The shards that were written are kept and recorded for a resumed run."""

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


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


def _write_slice(job: ShardJob, settings: Settings, out: str, cpus: float) -> ShardResult:
    _limit_threads(cpus)
    return write_shard(job, settings, out)


# ---------------------------------------------------------------- driver side


class _RayTasks:
    def __init__(self, cpus: float, gpus: float, max_retries: int) -> None:
        ray = import_ray()
        self.ray = ray
        self.cpus = cpus
        options = {"max_retries": max_retries, "retry_exceptions": True}
        self.scan = ray.remote(_scan_chunk).options(num_cpus=cpus, **options)
        self.write = ray.remote(_write_slice).options(num_cpus=cpus, num_gpus=gpus, **options)
        self.refs: list[Any] = []

    def map(self, fn: Callable, chunks: Iterable) -> Iterator:
        """``map`` over Ray tasks, results in order."""
        self.refs = [self.scan.remote(fn, chunk, self.cpus) for chunk in chunks]
        for ref in self.refs:
            yield self.ray.get(ref)

    def run(self, jobs: list[ShardJob], settings: Settings, out: storage.Location,
            on_result: Callable[[ShardResult], None]) -> dict[str, str]:
        """Run every job; ``on_result`` for each written shard as it finishes; return the
        failed slices' errors by name."""
        settings_ref = self.ray.put(settings)
        name_of = {}
        for job in jobs:
            ref = self.write.remote(job, settings_ref, str(out), self.cpus)
            name_of[ref] = job.name
        self.refs = list(name_of)
        failures = {}
        pending = list(self.refs)
        while pending:
            finished, pending = self.ray.wait(pending, num_returns=1)
            for ref in finished:
                try:
                    result = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    failures[name_of[ref]] = error_line(exc)
                    continue
                on_result(result)
        return failures

    def stop(self) -> None:
        cancel_unfinished(self.refs)


def _failure_message(failures: dict[str, str], plan: Plan, done: dict[str, ShardResult],
                     out: storage.Location, retries: int) -> str:
    lines = [f"{len(failures)} slice(s) failed after {retries} retries; {len(done)} of "
             f"{len(plan.jobs)} shard(s) complete in {out}:"]
    lines += [f"  {name}: {error}" for name, error in sorted(failures.items())]
    lines.append("fix the cause and run the same command again: it resumes with the failed "
                 "slices only")
    return "\n".join(lines)


def _absolute(path: str | Path) -> storage.Location:
    """Ray workers do not run in the driver's folder: they get absolute paths."""
    loc = storage.location(path)
    return loc.resolve() if isinstance(loc, Path) else loc


def write_dataset_ray(
    src: str | Path,
    out: str | Path,
    settings: Settings,
    *,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float | None = None,
    max_retries: int = 3,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Summary:
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

    Returns the same :class:`~stexture.shards.writer.Summary` as the local engine. Raises
    :class:`DecomposeFailed` naming each slice that kept failing (after every other slice
    has ended and been recorded), and :class:`~stexture.shards.local.DecomposeInterrupted`
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
    out = storage.location(out)
    connected = connect(address)
    tasks = _RayTasks(cpus_per_task, gpus_per_task, max_retries)
    done: dict[str, ShardResult] = {}
    plan: Plan | None = None
    try:
        # the items' paths are absolute, the recorded source is as given (as the local engine)
        plan = dataclasses.replace(_scan(_absolute(src), settings, tasks, show_progress),
                                   source=str(src))
        done, pending = open_for_resume(out, settings, plan, overwrite, log)
        with _bar(sum(len(job.entries) for job in pending), "decomposing", show_progress) as bar:
            def on_result(result: ShardResult) -> None:
                record_shard(out, settings, plan, done, result)
                bar.update(result.count)

            failures = tasks.run(pending, settings, _absolute(out), on_result)
        if failures:
            raise DecomposeFailed(_failure_message(failures, plan, done, out, max_retries),
                                  failures)
        return finish_dataset(out, plan, settings, done, written=len(pending))
    except KeyboardInterrupt:
        tasks.stop()
        raise interrupted(out, plan, done) from None
    except BaseException:
        tasks.stop()
        raise
    finally:
        if connected:
            import_ray().shutdown()

