"""The local engine of ``stexture decompose``: plan, then map the shard jobs over a pool of
worker processes on this machine (see :mod:`stexture.shards.writer` for the phases)."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import storage
from .writer import (
    Plan,
    Settings,
    ShardJob,
    ShardResult,
    Summary,
    finish_dataset,
    iter_pending,
    open_output,
    plan_dataset,
    record_shard,
    remove_partials,
    write_shard,
)

__all__ = ["DecomposeInterrupted", "write_dataset"]


class DecomposeInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`write_dataset`; the message says how far it got and how to resume."""


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------- worker process side

_progress_queue: Any = None


def _init_worker(threads: int, progress_queue: Any) -> None:
    global _progress_queue
    # Ctrl-C goes to the whole process group; the parent alone decides how to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _progress_queue = progress_queue
    progress_queue.put(("pid", os.getpid()))
    import cv2
    import numba

    cv2.setNumThreads(1)
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _report_progress(n: int) -> None:
    _progress_queue.put(("images", n))


def _write_shard_in_worker(job: ShardJob, settings: Settings, out: str) -> ShardResult:
    return write_shard(job, settings, out, progress=_report_progress)


# ---------------------------------------------------------------- parent side


class _InProcess:
    """``workers == 1``: everything runs in this process (no start-up cost, easy to debug)."""

    def map(self, fn: Callable, chunks: Iterable) -> Iterator:
        return map(fn, chunks)

    def run(self, jobs: list[ShardJob], settings: Settings, out: storage.Location,
            progress: Callable[[int], None]) -> Iterator[ShardResult]:
        for job in jobs:
            yield write_shard(job, settings, out, progress=progress)

    def stop(self) -> None:
        """Nothing runs elsewhere."""

    def close(self) -> None:
        """Nothing to release."""


class _Pool:
    """``workers > 1``: a spawn-started process pool; each worker gets ``cores // workers``
    Numba threads so that processes x threads does not oversubscribe the machine."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.pids: set[int] = set()
        threads = max(1, _cpu_count() // workers)
        self.executor = ProcessPoolExecutor(workers, mp_context=context,
                                            initializer=_init_worker,
                                            initargs=(threads, self.queue))

    def map(self, fn: Callable, chunks: Iterable) -> Iterator:
        return self.executor.map(fn, chunks)

    def _drain(self, progress: Callable[[int], None] | None) -> None:
        try:
            while True:
                kind, value = self.queue.get_nowait()
                if kind == "pid":
                    self.pids.add(value)
                elif progress is not None:
                    progress(value)
        except queue.Empty:
            return

    def run(self, jobs: list[ShardJob], settings: Settings, out: storage.Location,
            progress: Callable[[int], None]) -> Iterator[ShardResult]:
        pending: set[Future] = {
            self.executor.submit(_write_shard_in_worker, job, settings, str(out)) for job in jobs
        }
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(progress)
            for future in finished:
                yield future.result()

    def stop(self) -> None:
        """End the workers now (they ignore SIGINT): SIGTERM to each of our own processes."""
        self._drain(None)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr, smoothing=0.1)


def _scan(src: str | Path, settings: Settings, engine: Any, show_progress: bool) -> Plan:
    def map_with_bar(fn: Callable, chunks: Iterable) -> Iterator:
        chunks = list(chunks)
        with _bar(sum(len(c) for c in chunks), "scanning", show_progress) as bar:
            for result in engine.map(fn, chunks):
                bar.update(len(result))
                yield result

    return plan_dataset(src, settings, map_fn=map_with_bar)



def open_for_resume(out: str, settings: Settings, plan: Plan, overwrite: bool,
                    log: Callable[[str], None]) -> tuple[dict[str, ShardResult], list[ShardJob]]:
    """The shards already complete in ``out`` and the jobs still to run (any engine)."""
    done = open_output(out, settings, plan, overwrite)
    pending = list(iter_pending(plan, done))
    if done:
        log(f"resuming: {len(done)} of {len(plan.jobs)} shard(s) already complete in {out}")
    return done, pending


def interrupted(out: str, plan: Plan | None, done: dict[str, ShardResult]) -> DecomposeInterrupted:
    """What a Ctrl-C becomes once the workers are stopped: partial files removed, and a
    message with what is complete and how to resume."""
    remove_partials(out)
    total = f" of {len(plan.jobs)}" if plan is not None else ""
    return DecomposeInterrupted(
        f"interrupted: {len(done)}{total} shard(s) complete in {out}; run the same command "
        "again to resume")

def write_dataset(
    src: str | Path,
    out: str | Path,
    settings: Settings,
    workers: int = 1,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Summary:
    """Decompose the images under ``src`` into shards in ``out`` with ``workers`` processes.

    Re-running with the same arguments resumes: shards already complete (checked against
    their recorded SHA-256) are kept and the result is byte-identical to an uninterrupted
    run. Ctrl-C raises :class:`DecomposeInterrupted` after the workers are stopped and no
    partial file is left. ``src`` and ``out`` may be fsspec URLs (``s3://bucket/prefix``;
    a ``memory://`` file system is not shared with worker processes: use ``workers=1``).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = storage.location(out)
    engine: Any = _InProcess() if workers == 1 else _Pool(workers)
    done: dict[str, ShardResult] = {}
    plan: Plan | None = None
    try:
        plan = _scan(src, settings, engine, show_progress)
        done, pending = open_for_resume(out, settings, plan, overwrite, log)
        with _bar(sum(len(job.entries) for job in pending), "decomposing", show_progress) as bar:
            for result in engine.run(pending, settings, out, bar.update):
                record_shard(out, settings, plan, done, result)
        summary = finish_dataset(out, plan, settings, done, written=len(pending))
    except KeyboardInterrupt:
        engine.stop()
        raise interrupted(out, plan, done) from None
    except BaseException:
        engine.stop()
        raise
    engine.close()
    return summary
