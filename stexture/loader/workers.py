"""The init every loader worker runs first: it ends with its parent, and one OpenCV
thread unless forked."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import cv2

from .._lifecycle import die_with_parent


class _WorkerInit:
    """Runs in each worker before the user's ``worker_init_fn``.

    The worker ends when the process that started it does (killed included), even while it
    is blocked where torch's own watchdog cannot see it. A worker started fresh (spawn,
    forkserver) gets one OpenCV thread: the workers are the parallelism. A forked worker
    leaves OpenCV's pool alone: reconfiguring it there waits forever on the condition
    variables of the parent's pool threads, which the child does not have (OpenCV's own fork
    handling runs the child's work without them).
    """

    def __init__(self, user_fn: Callable[[int], None] | None, forked: bool) -> None:
        self.user_fn = user_fn
        self.forked = forked

    def __call__(self, worker_id: int) -> None:
        die_with_parent(os.getppid())
        if not self.forked:
            cv2.setNumThreads(1)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def _worker_init(options: dict[str, Any]) -> _WorkerInit:
    """The worker init for DataLoader ``options`` (takes out the user's ``worker_init_fn``)."""
    context = options.get("multiprocessing_context")
    if isinstance(context, str):
        context = multiprocessing.get_context(context)
    forked = (context or multiprocessing.get_context()).get_start_method() == "fork"
    user_fn = options.pop("worker_init_fn", None)
    if isinstance(user_fn, _WorkerInit):  # a loader rebuilt from another's attributes
        user_fn = user_fn.user_fn
    return _WorkerInit(user_fn, forked)

