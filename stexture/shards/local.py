"""The local engine of ``stexture decompose``: the plan's scan and the shard jobs mapped over
worker processes on this machine, as an :class:`~stexture.shards.engine.Executor` of the one
driver loop :func:`~stexture.shards.engine.drive` (see :mod:`stexture.shards.plan` for
the phases)."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from .._lifecycle import die_with_parent
from . import storage
from .engine import DecomposeInterrupted, ShardFailure, drive
from .output import WriteSummary
from .plan import ShardJob, ShardSettings
from .write import ShardResult, write_shard

__all__ = ["DecomposeInterrupted", "write_dataset"]


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _failure(job: ShardJob, exc: BaseException) -> ShardFailure:
    return ShardFailure(job.name, f"{type(exc).__name__}: {exc}".splitlines()[0])


# ---------------------------------------------------------------- worker process side

_progress_queue: Any = None


def _init_worker(threads: int, progress_queue: Any, parent_pid: int) -> None:
    global _progress_queue
    die_with_parent(parent_pid)
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


def _write_shard_in_worker(job: ShardJob, settings: ShardSettings, out: str) -> ShardResult:
    return write_shard(job, settings, out, progress=_report_progress)


# ---------------------------------------------------------------- parent side


class _InProcess:
    """``workers == 1``: everything runs in this process (no start-up cost, easy to debug)."""

    retries = 0

    def reach(self, loc: storage.Location) -> storage.Location:
        return loc

    def map(self, fn: Callable, chunks: Iterable) -> Iterator:
        return map(fn, chunks)

    def run(self, jobs: list[ShardJob], settings: ShardSettings, out: storage.Location,
            progress: Callable[[int], None]) -> Iterator[ShardResult | ShardFailure]:
        for job in jobs:
            try:
                yield write_shard(job, settings, out, progress=progress)
            except Exception as exc:  # one bad shard does not stop the others
                yield _failure(job, exc)

    def stop(self) -> None:
        """Nothing runs elsewhere."""

    def close(self) -> None:
        """Nothing to release."""


class _Pool:
    """``workers > 1``: a spawn-started process pool; each worker gets ``cores // workers``
    Numba threads so that processes x threads does not oversubscribe the machine, and ends
    with this process (:func:`~stexture._lifecycle.die_with_parent`)."""

    retries = 0

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.pids: set[int] = set()
        threads = max(1, _cpu_count() // workers)
        self.executor = ProcessPoolExecutor(workers, mp_context=context,
                                            initializer=_init_worker,
                                            initargs=(threads, self.queue, os.getpid()))

    def reach(self, loc: storage.Location) -> storage.Location:
        return loc

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

    def run(self, jobs: list[ShardJob], settings: ShardSettings, out: storage.Location,
            progress: Callable[[int], None]) -> Iterator[ShardResult | ShardFailure]:
        job_of: dict[Future, ShardJob] = {
            self.executor.submit(_write_shard_in_worker, job, settings, str(out)): job
            for job in jobs
        }
        pending = set(job_of)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(progress)
            for future in finished:
                exc = future.exception()
                yield _failure(job_of[future], exc) if exc is not None else future.result()

    def _processes(self) -> dict[int, Any]:
        """Every worker this pool started, by PID: the executor's own table (it holds the
        ones whose start-up message has not arrived yet) and the PIDs the workers sent."""
        self._drain(None)
        table = dict(getattr(self.executor, "_processes", None) or {})
        return {pid: table.get(pid) for pid in self.pids | set(table)}

    def stop(self) -> None:
        """End the workers now (they ignore SIGINT), without waiting on any of them.

        A worker killed while it held one of the pool's queue locks leaves the others
        blocked on that lock for good, and ``ProcessPoolExecutor.shutdown(wait=True)`` waits
        on them for good: so the executor is only told to stop, and every worker is ended
        by PID (:func:`end_processes`)."""
        processes = self._processes()
        self.executor.shutdown(wait=False, cancel_futures=True)
        end_processes(processes, grace=0.0)

    def close(self) -> None:
        """After a run that ended well: the workers exit on their own (bounded), else are
        ended by PID like :meth:`stop`."""
        processes = self._processes()
        self.executor.shutdown(wait=False)
        end_processes(processes, grace=_CLOSE_GRACE_SECONDS)


_CLOSE_GRACE_SECONDS = 10.0
_TERM_GRACE_SECONDS = 5.0


def end_processes(processes: dict[int, Any], grace: float) -> None:
    """End the worker processes ``processes`` (PID -> ``multiprocessing.Process`` or
    ``None`` when only the PID is known), each a child of this process: wait up to
    ``grace`` seconds for them to exit, then SIGTERM, then SIGKILL what is left after
    another few seconds. Never waits longer than ``grace + 2 * _TERM_GRACE_SECONDS``."""
    def alive() -> list[int]:
        return [pid for pid in processes if _is_alive(pid, processes[pid])]

    for signum, wait_s in ((None, grace), (signal.SIGTERM, _TERM_GRACE_SECONDS),
                           (signal.SIGKILL, _TERM_GRACE_SECONDS)):
        left = alive()
        if not left:
            return
        for pid in left if signum is not None else ():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.02)


def _is_alive(pid: int, process: Any) -> bool:
    """Whether the child ``pid`` still runs (a zombie counts as ended; it is reaped here)."""
    if process is not None:
        return process.is_alive()  # reaps it when it has ended
    try:
        ended, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not (or no longer) our child: nothing of ours to end
    return ended == 0


def write_dataset(
    src: str | Path,
    out: str | Path,
    settings: ShardSettings,
    workers: int = 1,
    overwrite: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> WriteSummary:
    """Decompose the images under ``src`` into shards in ``out`` with ``workers`` processes.

    Re-running with the same arguments resumes: shards already complete (checked against
    their recorded SHA-256, and their sources' pixels) are kept and the result is
    byte-identical to an uninterrupted run. A shard job that fails does not stop the
    others: :class:`~stexture.shards.engine.DecomposeFailed` names every failed one at the
    end. Ctrl-C raises :class:`DecomposeInterrupted` after the workers are stopped and no
    partial file is left. ``src`` and ``out`` may be fsspec URLs (``s3://bucket/prefix``;
    a ``memory://`` file system is not shared with worker processes: use ``workers=1``).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return drive(src, out, settings, _InProcess() if workers == 1 else _Pool(workers),
                 overwrite=overwrite, show_progress=show_progress, log=log)
