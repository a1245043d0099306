"""A bounded local cache of remote shards: the loaders ask it for a local path.

Shards at an fsspec URL (``s3://bucket/shards``, ``gs://...``, ``https://...``) are
downloaded once per node into a cache folder and read from there, so the loaders only ever
see local files. For each remote folder the cache keeps, under ``cache_dir``::

    <url-slug>-<hash>/shards/NAME           verified shards, read by the loaders
    <url-slug>-<hash>/shards/NAME.partial   a download in progress (never read)
    <url-slug>-<hash>/meta/NAME.json        what was verified: sha256, size, inode, times
    <url-slug>-<hash>/locks/NAME.lock       one lock file per shard (never removed)
    <url-slug>-<hash>/cache.lock            taken while room is made for a download

What it guarantees:

- A shard is used only once its bytes matched the manifest's SHA-256: a download goes to
  ``NAME.partial`` (preallocated, so a full disk shows at once), is hashed as it arrives,
  flushed to disk and only then renamed to ``NAME``. A killed download leaves a
  ``.partial`` that is removed, never read; a cached file changed since it was verified
  (its size, inode or change time differ from the record in ``meta/``) is hashed again,
  and removed and fetched again when it no longer matches.
- One download per shard per node: every process (DataLoader workers, ranks on one node)
  takes the shard's file lock (``fcntl.flock``), exclusively to download it, shared while
  it uses it; a second process waiting for the same shard finds it verified and reads it.
- At most ``cache_limit`` bytes: before a download, shards are evicted, the least needed
  first (not in the order :meth:`ShardCache.prefetch` was given, least recently used
  first, then those needed last); a shard that any process has pinned, or is downloading,
  is never evicted. When nothing more can be evicted the request fails with a message
  saying what holds the room.
- Transient errors (connection refused or reset, timeouts, 5xx) are retried with
  exponential backoff, then :class:`ShardFetchError` names the shard and its URL; a missing
  object or refused credentials fail at once. An endpoint that was never reached fails at
  the first try with a one-line :class:`StorageUnreachableError`, instead of retrying.
- A cache folder that cannot be written, or is full, gives :class:`CacheFolderError`
  saying so and what to do.

Locks are POSIX ``flock`` locks: the cache folder must be on a local file system (not NFS).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import storage
from .format import check_member_file_name

__all__ = [
    "CacheFolderError",
    "ShardCache",
    "ShardChecksumError",
    "ShardFetchError",
    "ShardRef",
    "StorageUnreachableError",
    "default_cache_dir",
    "open_filesystem",
]

_T = TypeVar("_T")
_CHUNK_BYTES = 16 << 20  # one ranged GET per 16 MiB: few requests, bounded memory
_MAX_BACKOFF = 8.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENSURE_TRIES = 5  # a shard evicted again between its download and its pin, this often
_WAIT_FOR_ROOM = 120.0  # seconds a request waits for downloads in progress to free room
# errors that no retry can fix: the object or bucket is missing, the credentials are refused
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# class names (anywhere in an exception's MRO) of the transient errors of the fsspec back
# ends that do not derive from OSError: botocore, aiohttp, urllib3, fsspec's own timeout
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "HTTPClientError", "ProxyConnectionError", "IncompleteRead",
    "ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError",
    "ClientOSError", "ServerTimeoutError", "FSTimeoutError", "ProtocolError",
    "ResponseStreamingError",
})
# the subset that means "could not connect at all" (as opposed to "the transfer broke")
_CONNECT_NAMES = frozenset({"EndpointConnectionError", "ConnectTimeoutError",
                            "ProxyConnectionError", "ClientConnectorError"})


class CacheFolderError(OSError):
    """The cache folder cannot be created or written, or it is full."""


class StorageUnreachableError(ConnectionError):
    """The storage endpoint of a remote shard folder was never reached."""


class ShardFetchError(OSError):
    """A shard could not be fetched after the retries (names the shard and its URL)."""


class ShardChecksumError(ValueError):
    """A downloaded shard's bytes do not match the manifest's SHA-256 or size."""


@dataclass(frozen=True)
class ShardRef:
    """A shard as the manifest describes it: its file name, SHA-256 and (if known) size."""

    name: str
    sha256: str
    size: int | None = None


def default_cache_dir() -> Path:
    """Where shards are cached when no ``cache_dir`` is given.

    ``$STEXTURE_CACHE_DIR`` if set; else the user's cache folder: ``$XDG_CACHE_HOME`` or
    ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows,
    with ``stexture/shards`` under it.
    """
    explicit = os.environ.get("STEXTURE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stexture" / "shards"


def _folder_name(url: str) -> str:
    """A readable, unique folder name for a remote root: its slug and a hash of the URL."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url).strip("-.")[:80]
    return f"{slug}-{hashlib.sha256(url.encode('utf-8')).hexdigest()[:12]}"


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _TRANSIENT_NAMES:
        return True
    # s3fs turns the S3 error codes into OSError subclasses (the permanent ones above);
    # a plain OSError is a 5xx, a throttle or a broken connection
    return type(exc) is OSError


def _cannot_connect(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionRefusedError, TimeoutError)):
        return True
    return bool({cls.__name__ for cls in type(exc).__mro__} & _CONNECT_NAMES)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _with_defaults(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """For S3: botocore's own retries off (this cache retries, with its own backoff, and
    fails fast on an endpoint it never reached) and a connect timeout of 5 s, unless the
    caller set them."""
    if not url.startswith(("s3://", "s3a://")):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", 5)
    config.setdefault("retries", {"total_max_attempts": 1})
    return {**options, "config_kwargs": config}


def open_filesystem(url: str, storage_options: dict[str, Any] | None = None
                    ) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path in it, with ``storage_options``
    (endpoint, credentials; for S3 the environment's ``AWS_ENDPOINT_URL``, ... apply too).

    Raises
    ------
    ValueError
        fsspec (or the protocol's package) is not installed: names the extra to install.
    """
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ValueError(f"{url} is a URL: reading shards from a URL needs fsspec "
                         "(pip install 'stexture[storage]')") from None
    try:
        return url_to_fs(url, **_with_defaults(url, dict(storage_options or {})))
    except ImportError as exc:
        raise ValueError(f"{url}: {exc} (pip install 'stexture[storage]')") from None


# fsspec empties its instance cache in a forked child, so the parent's clients become
# garbage there, and collecting them closes their pooled connections through the event loop's
# epoll instance, which the child shares with the parent: that unregisters the parent's
# sockets, and the parent's next request on one hangs until a timeout (15 s seen). Holding
# the instances over the fork keeps the child from ever collecting them.
_HELD_OVER_FORK: list[Any] = []


def _hold_clients_over_fork() -> None:
    spec = sys.modules.get("fsspec.spec")
    classes = getattr(spec, "_registered_classes", None)
    if classes is None:
        return
    try:
        _HELD_OVER_FORK[:] = [client for cls in list(classes)
                              for client in list(getattr(cls, "_cache", {}).values())]
    except Exception:  # noqa: BLE001 - a private structure of fsspec changed: do nothing
        _HELD_OVER_FORK.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_clients_over_fork)


def _sha256_file(path: Path) -> str:
    return storage.sha256_of(path)


@contextmanager
def _local_errors(folder: Path, what: str) -> Iterator[None]:
    """Turn a read-only, missing-permission or full cache folder into a clear message."""
    try:
        yield
    except CacheFolderError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CacheFolderError(
                exc.errno, f"the shard cache folder {folder} cannot be written ({what}: "
                f"{exc.strerror}); pass cache_dir= (or set STEXTURE_CACHE_DIR to) a writable "
                "folder") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheFolderError(
                exc.errno, f"the shard cache folder {folder} is full ({what}: {exc.strerror}; "
                f"{_free_bytes(folder)} bytes free); free space there, pass a smaller "
                "cache_limit= or another cache_dir=") from None
        if exc.errno in (errno.ENOTDIR, errno.EEXIST) and what == "creating it":
            raise CacheFolderError(
                exc.errno, f"the shard cache folder {folder} cannot be created: "
                f"{exc.strerror} (a file is in the way); pass another cache_dir=") from None
        raise


def _free_bytes(folder: Path) -> int | str:
    for candidate in (folder, *folder.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return "?"


@dataclass
class _Entry:
    name: str
    size: int
    last_use: float
    partial: bool


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
        client = self.storage_options.get("client_kwargs") or {}
        for value in (client.get("endpoint_url"), self.storage_options.get("endpoint_url")):
            if value:
                return str(value)
        if self.remote_root.startswith(("s3://", "s3a://")):
            for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
                if os.environ.get(variable):
                    return f"{os.environ[variable]} from {variable}"
            return "the default AWS endpoint: set AWS_ENDPOINT_URL or storage_options="
        return self.remote_root.split("/")[2] if "://" in self.remote_root else "?"

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

    def prefetch(self, shards: Iterable[Any], ahead: int = 8) -> None:
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
        """
        plan = [self._ref(s.name, s.sha256, getattr(s, "size", None)) for s in shards]
        self._check_process()
        with self._state:
            self._plan = plan
            self._plan_pos = {}
            for position, ref in enumerate(plan):
                self._plan_pos.setdefault(ref.name, position)
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

    # -- locks ---------------------------------------------------------------------------

    @contextmanager
    def _name_lock(self, name: str, blocking: bool = True) -> Iterator[bool]:
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

    def _open_lock(self, name: str) -> int:
        with _local_errors(self.folder, "making a lock file"):
            return os.open(self.folder / "locks" / f"{name}.lock",
                           os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

    @contextmanager
    def _space_lock(self) -> Iterator[None]:
        with self._space:
            fd = os.open(self.folder / "cache.lock", os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- verification --------------------------------------------------------------------

    def _record(self, ref: ShardRef, info: os.stat_result) -> dict[str, Any]:
        return {"sha256": ref.sha256, "size": info.st_size, "inode": info.st_ino,
                "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}

    def _read_record(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._meta(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _write_record(self, ref: ShardRef, info: os.stat_result) -> None:
        target = self._meta(ref.name)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}")
        with _local_errors(self.folder, "recording a checked shard"):
            temporary.write_text(json.dumps(self._record(ref, info)), encoding="utf-8")
            os.replace(temporary, target)

    def _touch(self, name: str) -> None:
        """Record a use (the record's modification time orders least-recently-used)."""
        try:
            os.utime(self._meta(name))
        except OSError:
            pass

    def _is_valid(self, ref: ShardRef, may_remove: bool) -> bool:
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
            if _sha256_file(path) == ref.sha256:
                self._write_record(ref, info)
                return True
        if may_remove:
            warnings.warn(f"the cached copy of {self.url(ref.name)} ({path}) does not match "
                          "the manifest's sha256: removed, fetching it again", stacklevel=4)
            self._remove_entry(ref.name)
        return False

    def _remove_entry(self, name: str) -> None:
        with _local_errors(self.folder, "removing a shard"):
            self._meta(name).unlink(missing_ok=True)
            self.path(name).unlink(missing_ok=True)

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

    # -- room ----------------------------------------------------------------------------

    def _scan(self) -> list[_Entry]:
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

    def _next_need(self, name: str) -> int | None:
        """The plan position at which ``name`` is needed next; None when not this epoch."""
        position = self._plan_pos.get(name)
        if position is None or position < self._cursor or position in self._requested:
            return None
        return position

    def _eviction_order(self, entries: list[_Entry], before: int | None,
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

    def _evict(self, entry: _Entry) -> bool:
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

    def _reserve(self, ref: ShardRef, size: int, before: int | None) -> int | None:
        """Make room for ``size`` bytes (evicting) and create the shard's ``.partial``
        file with that size preallocated; its descriptor, or None for a prefetch that
        would have to evict a shard needed sooner. A request (``before`` None) that finds
        the room held by downloads in progress waits for them (they become evictable)."""
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

    def _make_room(self, ref: ShardRef, size: int, before: int | None) -> bool | None:
        """Evict until ``size`` more bytes fit the limit: None when they do; else whether
        downloads in progress hold some of the room (waiting may help)."""
        if self.cache_limit is None:
            return None
        entries = self._scan()
        used = sum(entry.size for entry in entries)
        for entry in self._eviction_order(entries, before, ref.name):
            if used + size <= self.cache_limit:
                break
            if self._evict(entry):
                used -= entry.size
        if used + size <= self.cache_limit:
            return None
        return any(entry.partial for entry in self._scan())

    def _create_partial(self, ref: ShardRef, size: int) -> int:
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

    # -- download ------------------------------------------------------------------------

    def _remote(self, ref: ShardRef, call: Callable[[], _T]) -> _T:
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

    def _permanent_error(self, ref: ShardRef, exc: Exception) -> Exception:
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

    def _download(self, ref: ShardRef, before: int | None = None) -> bool:
        """Fetch ``ref`` into the cache (the caller holds its exclusive lock); False when a
        prefetch found no room it may make."""
        started = self._begin_download(ref, before)
        if started is None:
            return False
        self._finish_download(ref, *started)
        return True

    def _begin_download(self, ref: ShardRef, before: int | None
                        ) -> tuple[int, int, Any, str] | None:
        """Size the shard, make room and create its ``.partial``: (descriptor, size, file
        system, remote path), or None (see :meth:`_reserve`)."""
        fs, _ = self._filesystem()
        remote = self._remote_path(ref.name)
        size = ref.size if ref.size is not None else int(
            self._remote(ref, lambda: fs.size(remote)))
        fd = self._reserve(ref, size, before)
        return None if fd is None else (fd, size, fs, remote)

    def _finish_download(self, ref: ShardRef, fd: int, size: int, fs: Any, remote: str
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

    def _stream_into(self, ref: ShardRef, fs: Any, remote: str, size: int, fd: int) -> None:
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

    # -- prefetch ------------------------------------------------------------------------

    def _note_requested(self, name: str) -> None:
        with self._state:
            position = self._plan_pos.get(name)
            if position is None or position < self._cursor:
                return
            self._requested.add(position)
            while self._cursor in self._requested:
                self._cursor += 1
            self._wake.notify_all()

    def _window(self) -> list[tuple[int, ShardRef]]:
        """The next ``ahead`` shards of the plan not yet asked for."""
        window = []
        position = self._cursor
        while position < len(self._plan) and len(window) < self._ahead:
            if position not in self._requested:
                window.append((position, self._plan[position]))
            position += 1
        return window

    def _prefetch_loop(self) -> None:
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

    def _start_prefetch(self, ref: ShardRef, position: int
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

    def _run_prefetch(self, ref: ShardRef, lock: threading.Lock, lock_fd: int,
                      started: tuple[int, int, Any, str]) -> None:
        try:
            self._finish_download(ref, *started)
        except Exception:  # noqa: BLE001 - the request that needs it reports the error
            pass
        finally:
            os.close(lock_fd)
            lock.release()
