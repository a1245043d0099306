"""The shard cache's room: what is cached, what is needed next, and what is evicted
first. Methods of :class:`ShardCache`."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import storage
from .errors import (
    CacheFolderError,
    ShardRef,
    _local_errors,
)

if TYPE_CHECKING:
    from .core import ShardCache


_WAIT_FOR_ROOM = 120.0  # seconds a request waits for other downloads and readers to free room


@dataclass
class _Entry:
    name: str
    size: int
    last_use: float
    partial: bool



def _scan(self: ShardCache) -> list[_Entry]:
    entries = []
    folder = self.folder / "shards"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        try:
            info = os.lstat(folder / name)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        partial = name.endswith(storage.PARTIAL_SUFFIX)
        base = name[:-len(storage.PARTIAL_SUFFIX)] if partial else name
        try:
            last_use = os.stat(self._meta(base)).st_mtime
        except OSError:
            last_use = info.st_mtime
        entries.append(_Entry(base, info.st_size, last_use, partial))
    return entries

def _next_need(self: ShardCache, name: str) -> int | None:
    """The plan position at which ``name`` is needed next; None when not this epoch. A
    shard already asked for is needed still (at its first position) while the plan has
    not passed its ``until`` position (:meth:`ShardCache.prefetch`)."""
    position = self._plan_pos.get(name)
    if position is None:
        return None
    if position < self._cursor or position in self._requested:
        return position if self._plan_until.get(name, -1) >= self._cursor else None
    return position

def _eviction_order(self: ShardCache, entries: list[_Entry], before: int | None,
                    keep: str) -> list[_Entry]:
    """Stale downloads first, then shards not needed again this epoch (least recently
    used first), then those needed latest; with ``before`` (a prefetch for that plan
    position) only shards needed after it, so a prefetch never evicts what is needed
    sooner than what it fetches."""
    with self._state:
        need = {entry.name: self._next_need(entry.name) for entry in entries}
        pinned = set(self._pins)
    ranked = []
    for entry in entries:
        if entry.name == keep or entry.name in pinned:
            continue
        position = need[entry.name]
        if before is not None and position is not None and position <= before:
            continue
        if entry.partial:
            ranked.append(((0, 0.0), entry))
        elif position is None:
            ranked.append(((1, entry.last_use), entry))
        else:
            ranked.append(((2, -position), entry))
    return [entry for _, entry in sorted(ranked, key=lambda item: item[0])]

def _evict(self: ShardCache, entry: _Entry) -> bool:
    """Remove ``entry`` unless a thread or process uses it (its lock is taken)."""
    with self._name_lock(entry.name, blocking=False) as got:
        if not got:
            return False
        fd = self._open_lock(entry.name)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # pinned or being downloaded elsewhere
            with _local_errors(self.folder, "evicting a shard"):
                if entry.partial:
                    storage.remove_partial(self.path(entry.name))
                else:
                    self._remove_entry(entry.name)
            return True
        finally:
            os.close(fd)

def _reserve(self: ShardCache, ref: ShardRef, size: int, before: int | None) -> int | None:
    """Make room for ``size`` bytes (evicting) and create the shard's ``.partial``
    file with that size preallocated; its descriptor, or None for a prefetch that
    would have to evict a shard needed sooner. A request (``before`` None) that finds
    the room held by downloads in progress, or by shards other processes read, waits for
    them (they become evictable), at most :data:`_WAIT_FOR_ROOM` seconds."""
    if self.cache_limit is not None and size > self.cache_limit:
        raise CacheFolderError(errno.ENOSPC, f"{self.url(ref.name)} is {size} bytes, more "
                               f"than the whole cache_limit of {self.cache_limit}")
    deadline = time.monotonic() + _WAIT_FOR_ROOM
    while True:
        with self._space_lock():
            # any .partial of this shard is a killed download's (the caller holds the
            # shard's exclusive lock): removed before the room is counted, never read
            storage.remove_partial(self.path(ref.name))
            in_flight = self._make_room(ref, size, before)
            if in_flight is None:
                return self._create_partial(ref, size)
        if before is not None:
            return None
        if not in_flight or time.monotonic() > deadline:
            raise CacheFolderError(
                errno.ENOSPC, f"cache_limit={self.cache_limit} bytes is too small to "
                f"fetch {self.url(ref.name)} ({size} bytes): the rest is pinned or being "
                "downloaded; raise cache_limit or pin fewer shards at once")
        time.sleep(0.05)

def _make_room(self: ShardCache, ref: ShardRef, size: int, before: int | None) -> bool | None:
    """Evict until ``size`` more bytes fit the limit: None when they do; else whether
    downloads in progress, or shards another process (a DataLoader worker reading its
    current shard) or thread holds, keep some of the room (waiting may help)."""
    if self.cache_limit is None:
        return None
    entries = self._scan()
    used = sum(entry.size for entry in entries)
    held_elsewhere = False
    for entry in self._eviction_order(entries, before, ref.name):
        if used + size <= self.cache_limit:
            break
        if self._evict(entry):
            used -= entry.size
        else:
            held_elsewhere = True
    if used + size <= self.cache_limit:
        return None
    return held_elsewhere or any(entry.partial for entry in self._scan())
