"""The shard cache's verified download: a preallocated ``.partial``, ranged reads
hashed as they come and retried with backoff, then flush and rename. Methods of
:class:`ShardCache`."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import storage
from .errors import (
    ShardChecksumError,
    ShardFetchError,
    ShardRef,
    StorageUnreachableError,
    _cannot_connect,
    _is_transient,
    _local_errors,
    _one_line,
)

if TYPE_CHECKING:
    from .core import ShardCache


_T = TypeVar("_T")
_CHUNK_BYTES = 16 << 20  # one ranged GET per 16 MiB: few requests, bounded memory
_MAX_BACKOFF = 8.0


def _create_partial(self: ShardCache, ref: ShardRef, size: int) -> int:
    partial = self._partial(ref.name)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    with _local_errors(self.folder, f"creating {partial.name}"):
        fd = os.open(partial, flags, 0o644)
    try:
        if size and hasattr(os, "posix_fallocate"):
            try:
                with _local_errors(self.folder, f"reserving {size} bytes"):
                    os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise  # the full-disk message; other file systems just grow it
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    return fd


def _remote(self: ShardCache, ref: ShardRef, call: Callable[[], _T]) -> _T:
    """``call()`` with the retry policy: transient errors retried with backoff, then
    :class:`ShardFetchError`; an endpoint never reached fails at once."""
    failures = 0
    started = time.monotonic()
    while True:
        try:
            result = call()
        except Exception as exc:
            if not _is_transient(exc):
                raise self._permanent_error(ref, exc) from None
            if not self._reached and _cannot_connect(exc):
                raise StorageUnreachableError(
                    f"cannot reach the storage of {self.remote_root} (endpoint "
                    f"{self._endpoint()}): {_one_line(exc)}") from None
            failures += 1
            if failures > self.retries:
                raise ShardFetchError(
                    errno.EIO, f"could not fetch shard {ref.name} from {self.url(ref.name)}"
                    f" after {failures} tries in {time.monotonic() - started:.1f} s: "
                    f"{_one_line(exc)}") from None
            time.sleep(min(self.backoff * 2 ** (failures - 1), _MAX_BACKOFF))
            continue
        self._reached = True
        return result

def _permanent_error(self: ShardCache, ref: ShardRef, exc: Exception) -> Exception:
    url = self.url(ref.name)
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, f"shard {ref.name} is not at {url} (or "
                                 f"its bucket does not exist): {_one_line(exc)}")
    if isinstance(exc, PermissionError):
        return PermissionError(errno.EACCES, f"the storage refused to give shard "
                               f"{ref.name} at {url} (check the credentials): "
                               f"{_one_line(exc)}")
    return ShardFetchError(errno.EIO, f"could not fetch shard {ref.name} from {url}: "
                           f"{_one_line(exc)}")

def _download(self: ShardCache, ref: ShardRef, before: int | None = None) -> bool:
    """Fetch ``ref`` into the cache (the caller holds its exclusive lock); False when a
    prefetch found no room it may make."""
    started = self._begin_download(ref, before)
    if started is None:
        return False
    self._finish_download(ref, *started)
    return True

def _begin_download(self: ShardCache, ref: ShardRef, before: int | None
                    ) -> tuple[int, int, Any, str] | None:
    """Size the shard, make room and create its ``.partial``: (descriptor, size, file
    system, remote path), or None (see :meth:`_reserve`)."""
    fs, _ = self._filesystem()
    remote = self._remote_path(ref.name)
    size = ref.size if ref.size is not None else int(
        self._remote(ref, lambda: fs.size(remote)))
    fd = self._reserve(ref, size, before)
    return None if fd is None else (fd, size, fs, remote)

def _finish_download(self: ShardCache, ref: ShardRef, fd: int, size: int, fs: Any, remote: str
                     ) -> None:
    """Stream the shard into its ``.partial``, check it, flush it and rename it."""
    partial = self._partial(ref.name)
    try:
        self._stream_into(ref, fs, remote, size, fd)
        with _local_errors(self.folder, f"writing {partial.name}"):
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    os.close(fd)
    # the bytes are on disk before the rename (a crash never leaves a renamed file with
    # unwritten blocks that its record would vouch for); the rename itself is not
    # flushed: lost in a crash, it costs one download again
    # renamed under the space lock: a scan that listed the .partial and then missed it
    # would count neither name and let a reservation pass the limit
    with self._space_lock(), _local_errors(self.folder, f"renaming {partial.name}"):
        os.replace(partial, self.path(ref.name))
        self._write_record(ref, os.lstat(self.path(ref.name)))
    with self._state:
        self.downloads += 1

def _stream_into(self: ShardCache, ref: ShardRef, fs: Any, remote: str, size: int, fd: int) -> None:
    """Ranged reads into ``fd``, hashed as they come; a retry resumes where the last
    good chunk ended. The bytes must come to ``size`` and hash to ``ref.sha256``."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        end = min(offset + _CHUNK_BYTES, size)
        data = self._remote(ref, lambda start=offset, stop=end:
                            fs.cat_file(remote, start=start, end=stop))
        if not data:
            raise ShardChecksumError(f"{self.url(ref.name)} ends at {offset} bytes; the "
                                     f"manifest says {size}")
        data = data[:end - offset]
        view = memoryview(data)
        with _local_errors(self.folder, f"writing {ref.name}{storage.PARTIAL_SUFFIX}"):
            while view:
                view = view[os.pwrite(fd, view, offset + len(data) - len(view)):]
        digest.update(data)
        offset += len(data)
    if digest.hexdigest() != ref.sha256:
        raise ShardChecksumError(
            f"{self.url(ref.name)} has sha256 {digest.hexdigest()}, the manifest says "
            f"{ref.sha256}: the shard was rewritten after its manifest, or is corrupt")
