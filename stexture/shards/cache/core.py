"""The shard cache: :class:`ShardCache`, its state and its public methods; the locks,
checks, eviction, download and prefetch are in the sibling modules."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import storage
from ..format import check_member_file_name
from . import evict as _evicting
from . import fetch as _fetching
from . import lock as _locking
from . import prefetch as _prefetching
from . import verify as _verifying
from .client import _folder_name, default_cache_dir, describe_endpoint, open_filesystem
from .errors import (
    CacheFolderError,
    ShardRef,
    _local_errors,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENSURE_TRIES = 5  # a shard evicted again between its download and its pin, this often


class ShardCache:
    """Local copies of the shards of one remote folder, bounded in size.

    Parameters
    ----------
    remote_root : str
        The fsspec URL of the shard folder (``s3://bucket/shards``); a local path needs no
        cache and is refused.
    cache_dir : str or Path, optional
        Where the copies live (a folder per remote root is made inside it); by default
        :func:`default_cache_dir`. Must be on a local file system (file locks).
    cache_limit : int, optional
        The most bytes the copies of this remote folder may take (downloads in progress
        included); no limit by default.
    storage_options : dict, optional
        fsspec options for the URL, e.g. for S3 ``{"client_kwargs": {"endpoint_url":
        ...}, "key": ..., "secret": ...}``; the environment (``AWS_ENDPOINT_URL``, ...)
        applies as well.
    retries : int
        Tries after the first for a transient error, with backoff ``backoff * 2**i``
        seconds (at most 8 s each).
    backoff : float
        The first backoff in seconds.
    prefetch_workers : int
        Downloads :meth:`prefetch` runs at once.
    verify_every_use : bool
        Hash a cached shard on every use, not only when it changed since its check.

    Notes
    -----
    A cache is picklable (DataLoader workers, spawned processes): the copy shares the
    folder and the locks, but not pins or the prefetch order, which are per process.
    """

    def __init__(self, remote_root: str, cache_dir: str | Path | None = None,
                 cache_limit: int | None = None,
                 storage_options: dict[str, Any] | None = None, *, retries: int = 4,
                 backoff: float = 0.5, prefetch_workers: int = 4,
                 verify_every_use: bool = False) -> None:
        if not storage.is_url(str(remote_root)) or not isinstance(remote_root, str):
            raise ValueError(f"{remote_root} is not a URL: a local shard folder is read in "
                             "place, without a cache")
        if cache_limit is not None and (isinstance(cache_limit, bool)
                                        or not isinstance(cache_limit, int) or cache_limit <= 0):
            raise ValueError(f"cache_limit must be a number of bytes > 0, not {cache_limit!r}")
        if retries < 0 or backoff < 0 or prefetch_workers < 1:
            raise ValueError("retries and backoff must be >= 0 and prefetch_workers >= 1")
        self.remote_root = str(storage.location(remote_root))
        self.cache_limit = cache_limit
        self.storage_options = dict(storage_options or {})
        base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.folder = base / _folder_name(self.remote_root)
        self.retries = retries
        self.backoff = backoff
        self.prefetch_workers = prefetch_workers
        self.verify_every_use = verify_every_use
        self._reached = False
        self._init_runtime()
        with _local_errors(self.folder, "creating it"):
            for sub in ("shards", "meta", "locks"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.folder / "cache.lock", os.O_RDWR | os.O_CREAT, 0o644))

    # -- process-local state -------------------------------------------------------------

    def _init_runtime(self) -> None:
        self._pid = os.getpid()
        self._fs: Any = None
        self._fs_path = ""
        self._state = threading.RLock()
        self._space = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._pins: dict[str, list[int]] = {}  # name -> [lock fd holding LOCK_SH, count]
        self._plan: list[ShardRef] = []
        self._plan_pos: dict[str, int] = {}
        self._plan_until: dict[str, int] = {}  # name -> plan position it is needed until
        self._requested: set[int] = set()
        self._cursor = 0
        self._ahead = 0
        self._generation = 0
        self._wake = threading.Condition(self._state)
        self._thread: threading.Thread | None = None
        self._last = threading.local()  # the shard local_path returned last, per thread
        self._closed = False
        self.downloads = 0  # shards this process downloaded (tests, benchmarks)

    def _check_process(self) -> None:
        """After a fork the child starts its own state: its copies of the parent's lock
        fds are closed (the parent's locks stay, the parent still holds them)."""
        if os.getpid() == self._pid:
            return
        for fd, _count in self._pins.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._init_runtime()

    def __getstate__(self) -> dict[str, Any]:
        keep = ("remote_root", "cache_limit", "storage_options", "folder", "retries",
                "backoff", "prefetch_workers", "verify_every_use", "_reached")
        return {key: self.__dict__[key] for key in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __enter__(self) -> ShardCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the prefetching and release every pin of this process."""
        with self._state:
            self._closed = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
            pins, self._pins = self._pins, {}
        if thread is not None:
            thread.join()
        for fd, _count in pins.values():
            os.close(fd)

    # -- names and places ----------------------------------------------------------------

    def url(self, name: str) -> str:
        """The remote URL of shard ``name`` (as written in messages)."""
        return f"{self.remote_root}/{name}"

    def path(self, name: str) -> Path:
        """Where shard ``name`` is (or will be) cached."""
        return self.folder / "shards" / name

    def _meta(self, name: str) -> Path:
        return self.folder / "meta" / f"{name}.json"

    def _partial(self, name: str) -> Path:
        return self.folder / "shards" / f"{name}{storage.PARTIAL_SUFFIX}"

    def _ref(self, name: str, sha256: str, size: int | None) -> ShardRef:
        check_member_file_name(name, self.remote_root)
        if name.endswith(storage.PARTIAL_SUFFIX):
            raise ValueError(f"{self.url(name)}: a shard name may not end in "
                             f"{storage.PARTIAL_SUFFIX}")
        if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
            raise ValueError(f"{self.url(name)}: sha256 must be 64 hex digits, not {sha256!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 0):
            raise ValueError(f"{self.url(name)}: size must be a number of bytes >= 0, "
                             f"not {size!r}")
        return ShardRef(name, sha256.lower(), size)

    def _endpoint(self) -> str:
        return describe_endpoint(self.remote_root, self.storage_options)

    def _filesystem(self) -> tuple[Any, str]:
        # never a parent's client in a forked child: their pooled connections are shared,
        # and a child using one leaves the parent reading another response's bytes
        self._check_process()
        with self._state:
            if self._fs is None:
                self._fs, self._fs_path = open_filesystem(self.remote_root,
                                                          self.storage_options)
            return self._fs, self._fs_path

    def _remote_path(self, name: str) -> str:
        return f"{self._filesystem()[1].rstrip('/')}/{name}"

    # -- public API ----------------------------------------------------------------------

    def local_path(self, name: str, sha256: str, size: int | None = None) -> Path:
        """The local path of shard ``name``, downloaded and verified first if needed.

        The path stays valid until this thread's next call of ``local_path`` (the shard
        stays pinned until then, so reading one shard after another is safe, also beside
        :meth:`prefetch`); to hold several shards at once, use :meth:`pinned`.

        Parameters
        ----------
        name : str
            The shard's file name in the remote folder (as in the manifest).
        sha256 : str
            The manifest's SHA-256 of the shard.
        size : int, optional
            Its size in bytes, if known (else one metadata request asks the storage).

        Returns
        -------
        Path
            A regular file whose bytes match ``sha256``.
        """
        self._check_process()  # a forked child has no pins of its own yet
        previous = getattr(self._last, "name", None)
        if previous is not None:  # asking for the next shard: done with the last one
            self._last.name = None
            self.unpin(previous)
        path = self.pin(name, sha256, size)
        self._last.name = name
        return path

    def pin(self, name: str, sha256: str, size: int | None = None) -> Path:
        """Like :meth:`local_path`, and keep the shard from eviction (in every process on
        this node) until as many :meth:`unpin` calls as pins."""
        ref = self._ref(name, sha256, size)
        self._check_process()
        with self._name_lock(ref.name):
            with self._state:  # unpin, from any thread, changes the count under it
                held = self._pins.get(ref.name)
                if held is not None:
                    held[1] += 1
            if held is None:
                fd = self._open_lock(ref.name)
                try:
                    self._ensure(ref, fd)
                except BaseException:
                    os.close(fd)
                    raise
                with self._state:
                    self._pins[ref.name] = [fd, 1]
        self._touch(ref.name)
        self._note_requested(ref.name)
        return self.path(ref.name)

    def unpin(self, name: str) -> None:
        """Release one :meth:`pin` of ``name``; the last one lets it be evicted."""
        self._check_process()
        with self._state:
            held = self._pins.get(name)
            if held is None:
                raise ValueError(f"{self.url(name)} is not pinned")
            held[1] -= 1
            if held[1] == 0:
                del self._pins[name]
                os.close(held[0])  # closing the descriptor releases its shared lock

    @contextmanager
    def pinned(self, name: str, sha256: str, size: int | None = None) -> Iterator[Path]:
        """``with cache.pinned(name, sha256) as path:`` the shard's local path, kept
        from eviction inside the block."""
        path = self.pin(name, sha256, size)
        try:
            yield path
        finally:
            self.unpin(name)

    def prefetch(self, shards: Iterable[Any], ahead: int = 8,
                 until: dict[str, int] | None = None) -> None:
        """Say in which order the shards will be needed, and download ahead.

        A background thread keeps up to ``ahead`` shards ahead of the earliest one not yet
        asked for (by :meth:`pin` / :meth:`local_path`) downloaded, ``prefetch_workers`` at
        a time, without evicting a shard needed sooner than the one it fetches. Eviction
        uses this order (shards needed last go first). A new call replaces the order (the
        next epoch's).

        Parameters
        ----------
        shards : iterable
            Objects with ``name`` and ``sha256`` (and optionally ``size``) attributes, e.g.
            :class:`ShardRef` or the manifest's shard records, in the order of use.
        ahead : int
            How many shards to keep downloaded ahead (0: only record the order).
        until : dict of str to int, optional
            For a shard read again after its first request (several shards read
            interleaved, as the blocks shuffle does): the position in ``shards`` of the
            first shard asked for after its last read. It counts as needed, and is spared
            by eviction, until that one is asked for; without it, a shard counts as done
            at its first request.
        """
        plan = [self._ref(s.name, s.sha256, getattr(s, "size", None)) for s in shards]
        self._check_process()
        with self._state:
            self._plan = plan
            self._plan_pos = {}
            for position, ref in enumerate(plan):
                self._plan_pos.setdefault(ref.name, position)
            self._plan_until = dict(until or {})
            self._requested = set()
            self._cursor = 0
            self._ahead = max(0, int(ahead))
            self._generation += 1
            if self._ahead and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._prefetch_loop, daemon=True,
                                                name="stexture-shard-prefetch")
                self._thread.start()
            self._wake.notify_all()

    def cached(self) -> dict[str, int]:
        """The shards held verified in the cache now: name -> size in bytes."""
        found = {}
        for entry in self._scan():
            if not entry.partial and self._meta(entry.name).is_file():
                found[entry.name] = entry.size
        return found

    def used_bytes(self) -> int:
        """Bytes the cache folder of this remote root holds (downloads in progress too)."""
        with self._space_lock():
            return sum(entry.size for entry in self._scan())

    # -- locks (lock.py) -----------------------------------------------------------------

    _name_lock = _locking._name_lock
    _open_lock = _locking._open_lock
    _space_lock = _locking._space_lock

    # -- verification (verify.py) --------------------------------------------------------

    _record = _verifying._record
    _read_record = _verifying._read_record
    _write_record = _verifying._write_record
    _touch = _verifying._touch
    _is_valid = _verifying._is_valid
    _remove_entry = _verifying._remove_entry

    def _ensure(self, ref: ShardRef, fd: int, position: int | None = None) -> None:
        """Leave ``fd`` holding the shard's shared lock with a verified copy in place,
        downloading it (under the exclusive lock) when there is none."""
        for _ in range(_ENSURE_TRIES):
            fcntl.flock(fd, fcntl.LOCK_SH)
            if self._is_valid(ref, may_remove=False):
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if not self._is_valid(ref, may_remove=True):
                    self._download(ref, position)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        raise CacheFolderError(errno.ENOSPC, f"{self.url(ref.name)} was evicted "
                               f"{_ENSURE_TRIES} times before it could be used: cache_limit="
                               f"{self.cache_limit} is too small for the shards read at once")

    # -- room (evict.py) -----------------------------------------------------------------

    _scan = _evicting._scan
    _next_need = _evicting._next_need
    _eviction_order = _evicting._eviction_order
    _evict = _evicting._evict
    _reserve = _evicting._reserve
    _make_room = _evicting._make_room

    # -- download (fetch.py) -------------------------------------------------------------

    _create_partial = _fetching._create_partial
    _remote = _fetching._remote
    _permanent_error = _fetching._permanent_error
    _download = _fetching._download
    _begin_download = _fetching._begin_download
    _finish_download = _fetching._finish_download
    _stream_into = _fetching._stream_into

    # -- prefetch (prefetch.py) ----------------------------------------------------------

    _note_requested = _prefetching._note_requested
    _window = _prefetching._window
    _prefetch_loop = _prefetching._prefetch_loop
    _start_prefetch = _prefetching._start_prefetch
    _run_prefetch = _prefetching._run_prefetch
