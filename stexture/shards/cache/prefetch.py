"""The shard cache's prefetching: a thread that fetches the next shards of the plan in
the order of need. Methods of :class:`ShardCache`."""

from __future__ import annotations

import fcntl
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from .errors import ShardRef

if TYPE_CHECKING:
    from .core import ShardCache


def _note_requested(self: ShardCache, name: str) -> None:
    with self._state:
        position = self._plan_pos.get(name)
        if position is None or position < self._cursor:
            return
        self._requested.add(position)
        while self._cursor in self._requested:
            self._cursor += 1
        self._wake.notify_all()

def _window(self: ShardCache) -> list[tuple[int, ShardRef]]:
    """The next ``ahead`` shards of the plan not yet asked for."""
    window = []
    position = self._cursor
    while position < len(self._plan) and len(window) < self._ahead:
        if position not in self._requested:
            window.append((position, self._plan[position]))
        position += 1
    return window

def _prefetch_loop(self: ShardCache) -> None:
    with ThreadPoolExecutor(self.prefetch_workers,
                            thread_name_prefix="stexture-shard-fetch") as pool:
        seen = (-1, -1)
        while True:
            with self._state:
                while not self._closed and (self._generation, self._cursor) == seen:
                    self._wake.wait()
                if self._closed:
                    return
                seen = (self._generation, self._cursor)
                window = self._window()
            # room is taken here, one shard after another in the order of need, so
            # that a later shard never holds the room an earlier one needs; the
            # transfers then run side by side
            transfers = []
            for position, ref in window:
                started = self._start_prefetch(ref, position)
                if started is False:
                    break  # no room without evicting sooner needs: wait for the reader
                if started is not None:
                    transfers.append(pool.submit(self._run_prefetch, ref, *started))
            wait(transfers)

def _start_prefetch(self: ShardCache, ref: ShardRef, position: int
                    ) -> tuple[threading.Lock, int, tuple[int, int, Any, str]] | None | bool:
    """Take ``ref``'s locks and its room: what :meth:`_run_prefetch` needs; None when
    there is nothing to do (cached, busy elsewhere, failed: the request that needs it
    reports the error); False when there is no room."""
    with self._state:
        if ref.name in self._pins or self._closed:
            return None
        lock = self._name_locks.setdefault(ref.name, threading.Lock())
    if not lock.acquire(blocking=False):
        return None
    fd = None
    try:
        fd = self._open_lock(ref.name)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self._is_valid(ref, may_remove=True):
            started = None
        else:
            started = self._begin_download(ref, position)
            if started is None:
                started = False
    except Exception:  # noqa: BLE001 - busy elsewhere, or the request will report it
        started = None
    if not started:
        if fd is not None:
            os.close(fd)
        lock.release()
        return started
    return lock, fd, started

def _run_prefetch(self: ShardCache, ref: ShardRef, lock: threading.Lock, lock_fd: int,
                  started: tuple[int, int, Any, str]) -> None:
    try:
        self._finish_download(ref, *started)
    except Exception:  # noqa: BLE001 - the request that needs it reports the error
        pass
    finally:
        os.close(lock_fd)
        lock.release()
