"""The one driver loop of ``stexture decompose`` and the executor seam its engines fill.

An engine is an :class:`Executor`: it maps the plan's scan over chunks of inputs, runs shard
jobs and yields each one's :class:`~stexture.shards.write.ShardResult` or
:class:`ShardFailure` as it ends, and stops (everything it started ends, on this machine or
the cluster). :func:`drive` does everything else the same way for every engine: check the
output folder before any image is read, plan, open the output for resume, record each
written shard, name the failed ones, assemble the manifest, and turn Ctrl-C into
:class:`DecomposeInterrupted` with no partial file left. The local engine
(:mod:`.local`) and the Ray engine (:mod:`.ray_engine`) are executors and nothing more.

:func:`stexture._lifecycle.die_with_parent` is the other half of the worker lifecycle: a
worker process calls it when it starts, and ends as soon as the process that started it is
gone (``kill -9`` of the command included), instead of writing shards for nobody.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from .._lifecycle import hold_output
from . import storage
from .output import WriteSummary, finish_dataset
from .plan import Plan, ShardJob, ShardSettings, plan_dataset
from .write import (
    PROGRESS_NAME,
    ShardResult,
    check_output,
    iter_pending,
    open_output,
    record_shard,
    remove_partials,
)

__all__ = [
    "DecomposeFailed",
    "DecomposeInterrupted",
    "Executor",
    "ShardFailure",
    "drive",
    "progress_bar",
]


class DecomposeInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says how far it got and how to resume."""


class DecomposeFailed(RuntimeError):
    """Shard jobs that failed (after the engine's retries); ``failures`` maps each shard's
    name to its error. The shards that were written are kept and recorded for a resumed run.
    """

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class ShardFailure:
    """A shard job that raised: the shard's name and ``Type: message`` of the error."""

    name: str
    error: str


class Executor(Protocol):
    """What an engine provides to :func:`drive`.

    ``retries`` is how often a failed job is run again before it is yielded as a
    :class:`ShardFailure` (for the failure message).
    """

    retries: int

    def reach(self, loc: storage.Location) -> storage.Location:
        """``loc`` as the workers must be given it (e.g. absolute for another folder)."""

    def map(self, fn: Callable, chunks: Iterable) -> Iterator:
        """``fn`` over ``chunks``, results in order."""

    def run(self, jobs: list[ShardJob], settings: ShardSettings, out: storage.Location,
            progress: Callable[[int], None]) -> Iterator[ShardResult | ShardFailure]:
        """Every job's outcome as it ends; ``progress(n)`` as images are done."""

    def stop(self) -> None:
        """End everything still running, now."""

    def close(self) -> None:
        """Release the workers after a run that ended well."""


def progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """The progress bar of one phase, on stderr."""
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True,
                file=sys.stderr, smoothing=0.1)


def _plan(src: storage.Location, settings: ShardSettings, executor: Executor,
          show_progress: bool) -> Plan:
    def map_with_bar(fn: Callable, chunks: Iterable) -> Iterator:
        chunks = list(chunks)
        with progress_bar(sum(len(c) for c in chunks), "scanning", show_progress) as bar:
            for result in executor.map(fn, chunks):
                bar.update(len(result))
                yield result

    plan = plan_dataset(executor.reach(storage.location(src)), settings,
                        map_fn=map_with_bar)
    if not plan.jobs:
        reasons = Counter(r.reason for r in plan.rejected)
        files = [r for r in plan.rejected if r.reason != "empty_class"] or plan.rejected
        raise ValueError(
            f"no image of {src} was accepted ({plan.listed} listed; left out: "
            + (", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) or "none")
            + (f"; e.g. {files[0].detail}" if files else "") + ")")
    # the items carry the paths the workers reach; the record names the source as given
    return Plan(str(src), plan.classes, plan.jobs, plan.rejected, plan.listed, plan.ignored)


def _failure_message(failures: dict[str, str], plan: Plan, done: dict[str, ShardResult],
                     out: storage.Location, retries: int) -> str:
    after = f" after {retries} retries" if retries else ""
    lines = [f"{len(failures)} shard job(s) failed{after}; {len(done)} of {len(plan.jobs)} "
             f"shard(s) complete in {out}:"]
    lines += [f"  {name}: {error}" for name, error in sorted(failures.items())]
    lines.append("fix the cause and run the same command again: it resumes with the failed "
                 "shards only")
    return "\n".join(lines)


def _interrupted(out: storage.Location, plan: Plan | None, done: dict[str, ShardResult],
                 opened: bool) -> DecomposeInterrupted:
    """What a Ctrl-C becomes once the workers are stopped: partial files removed (once the
    output was opened, which names them in the progress file), and a message with what is
    complete and how to resume."""
    if plan is not None and opened:
        remove_partials(out, [PROGRESS_NAME, *(job.name for job in plan.jobs)])
    total = f" of {len(plan.jobs)}" if plan is not None else ""
    return DecomposeInterrupted(
        f"interrupted: {len(done)}{total} shard(s) complete in {out}; run the same command "
        "again to resume")


def drive(src: str | Path, out: str | Path, settings: ShardSettings, executor: Executor, *,
          overwrite: bool = False, show_progress: bool = True,
          log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> WriteSummary:
    """Run ``stexture decompose`` from ``src`` to ``out`` on ``executor`` (see the module
    docstring); the executor is stopped on any error and closed after success.

    The output folder is held (:func:`~stexture._lifecycle.hold_output`) from before the
    scan until the executor has stopped. Raises ``ValueError`` before any image is read for
    an output folder that cannot work or that another run holds (naming it),
    and when no image is accepted; :class:`DecomposeFailed` naming every shard that failed,
    after all others have ended and been recorded; :class:`DecomposeInterrupted` on Ctrl-C.
    """
    out = storage.location(out)
    done: dict[str, ShardResult] = {}
    plan: Plan | None = None
    opened = False
    # the lock is let go only after the executor has stopped: no worker of this run writes
    # into a folder another run holds
    with ExitStack() as held:
        try:
            check_output(out, src)
            held.enter_context(hold_output(out, "stexture decompose", log))
            plan = _plan(src, settings, executor, show_progress)
            done = open_output(out, settings, plan, overwrite, log)
            opened = True
            pending = list(iter_pending(plan, done))
            if done:
                log(f"resuming: {len(done)} of {len(plan.jobs)} shard(s) already complete "
                    f"in {out}")
            failures: dict[str, str] = {}
            total = sum(len(job.entries) for job in pending)
            with progress_bar(total, "decomposing", show_progress) as bar:
                for outcome in executor.run(pending, settings, executor.reach(out),
                                            bar.update):
                    if isinstance(outcome, ShardFailure):
                        failures[outcome.name] = outcome.error
                    else:
                        record_shard(out, settings, plan, done, outcome)
            if failures:
                raise DecomposeFailed(
                    _failure_message(failures, plan, done, out, executor.retries), failures)
            summary = finish_dataset(out, plan, settings, done, written=len(pending))
        except KeyboardInterrupt:
            executor.stop()
            raise _interrupted(out, plan, done, opened) from None
        except BaseException:
            executor.stop()
            raise
        executor.close()
    return summary
