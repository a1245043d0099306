"""Joining a Ray cluster, for the Ray engines (``pip install 'stexture[ray]'``): Ray is
imported only when one of them runs, so the package works without it."""

from __future__ import annotations

import logging
import os
from typing import Any

from ._storage_options import STORAGE_OPTIONS_VARIABLE

__all__ = ["cancel_unfinished", "connect", "error_line", "import_ray"]


def import_ray() -> Any:
    """The ``ray`` module, or an ``ImportError`` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray engine needs Ray: pip install 'stexture[ray]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (``"auto"``, ``"HOST:6379"``,
    ``"ray://HOST:10001"``; ``None``: ``RAY_ADDRESS``, else a new local cluster) unless this
    process is connected already. True when this call connected (the caller then shuts the
    connection down when done)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    # a dashboard is for a cluster started on purpose (`ray start --head`), not this one
    options: dict[str, Any] = {"include_dashboard": False} if address is None else {}
    # storage options given to this process (--storage-option) reach every task and Tune
    # trial of this job, also on a cluster whose workers were started with another env
    shared = os.environ.get(STORAGE_OPTIONS_VARIABLE)
    if shared:
        options["runtime_env"] = {"env_vars": {STORAGE_OPTIONS_VARIABLE: shared}}
    ray.init(address=address, logging_level=logging.WARNING, **options)
    return True


def cancel_unfinished(refs: list[Any]) -> None:
    """Force-cancel the tasks behind ``refs`` whose results are not ready yet.

    A ready result is left alone: Ray (2.60) publishes a task's result before its core worker
    marks the task complete, and a force-cancel in between makes the completion fail Ray's
    own check ``Tried to complete task that was not pending``, which ends the whole driver
    process with status 1 and nothing on its stderr (only in Ray's driver log).
    """
    if not refs:
        return
    ray = import_ray()
    _, unfinished = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
    for ref in unfinished:
        ray.cancel(ref, force=True)


def error_line(exc: BaseException) -> str:
    """``Type: message`` of a task's own exception (Ray wraps it, with Ray's traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
