"""The shard cache's locks: per shard in the process and on the node (flock), and the
lock taken while room is made. Methods of :class:`ShardCache`."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import _local_errors

if TYPE_CHECKING:
    from .core import ShardCache


@contextmanager
def _name_lock(self: ShardCache, name: str, blocking: bool = True) -> Iterator[bool]:
    """The in-process lock of one shard (flock locks do not order threads that share
    nothing, but each thread here opens its own descriptor, so they do too; this one
    keeps one thread's pin and another's download of the same shard apart cheaply)."""
    with self._state:
        lock = self._name_locks.setdefault(name, threading.Lock())
    got = lock.acquire(blocking)
    try:
        yield got
    finally:
        if got:
            lock.release()

def _open_lock(self: ShardCache, name: str) -> int:
    with _local_errors(self.folder, "making a lock file"):
        return os.open(self.folder / "locks" / f"{name}.lock",
                       os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

@contextmanager
def _space_lock(self: ShardCache) -> Iterator[None]:
    with self._space:
        fd = os.open(self.folder / "cache.lock", os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

