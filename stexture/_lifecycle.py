"""Worker processes that end with the process that started them (the decompose engines'
workers and the loaders' DataLoader workers alike)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_SECONDS = 0.5


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone (we were re-parented): nothing to clean here
        time.sleep(_WATCH_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """End this (worker) process when ``parent_pid``, the process that started it, ends.

    On Linux the kernel sends SIGKILL the moment the parent dies (``prctl`` with
    ``PR_SET_PDEATHSIG``, which works even while this process computes without the GIL);
    everywhere, a daemon thread also checks every half second that the parent is still the
    one, and exits if not. A parent already gone when this is called ends it at once.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="stexture-parent-watch").start()
