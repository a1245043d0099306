"""The shard cache's check of a cached copy: its record (sha256, size, inode, times) or
its hash. Methods of :class:`ShardCache`."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import warnings
from typing import TYPE_CHECKING, Any

from .. import storage
from .errors import (
    CacheFolderError,
    ShardRef,
    _local_errors,
)

if TYPE_CHECKING:
    from .core import ShardCache


def _record(self: ShardCache, ref: ShardRef, info: os.stat_result) -> dict[str, Any]:
    return {"sha256": ref.sha256, "size": info.st_size, "inode": info.st_ino,
            "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}

def _read_record(self: ShardCache, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(self._meta(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

def _write_record(self: ShardCache, ref: ShardRef, info: os.stat_result) -> None:
    target = self._meta(ref.name)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}")
    with _local_errors(self.folder, "recording a checked shard"):
        temporary.write_text(json.dumps(self._record(ref, info)), encoding="utf-8")
        os.replace(temporary, target)

def _touch(self: ShardCache, name: str) -> None:
    """Record a use (the record's modification time orders least-recently-used)."""
    try:
        os.utime(self._meta(name))
    except OSError:
        pass

def _is_valid(self: ShardCache, ref: ShardRef, may_remove: bool) -> bool:
    """True when the cached copy's bytes are known to match ``ref``: its record matches
    the file as it is now, or it hashes to ``ref.sha256``. With ``may_remove`` (the
    caller holds the shard's exclusive lock) a copy that does not match is removed."""
    path = self.path(ref.name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise CacheFolderError(errno.EEXIST, f"{path} is not a file the shard cache "
                               "wrote (a link or a folder): move it away")
    if ref.size is None or info.st_size == ref.size:
        if (not self.verify_every_use
                and self._read_record(ref.name) == self._record(ref, info)):
            return True
        if storage.sha256_of(path) == ref.sha256:
            self._write_record(ref, info)
            return True
    if may_remove:
        warnings.warn(f"the cached copy of {self.url(ref.name)} ({path}) does not match "
                      "the manifest's sha256: removed, fetching it again", stacklevel=4)
        self._remove_entry(ref.name)
    return False

def _remove_entry(self: ShardCache, name: str) -> None:
    with _local_errors(self.folder, "removing a shard"):
        self._meta(name).unlink(missing_ok=True)
        self.path(name).unlink(missing_ok=True)
