"""Where sources and shards live: a local path, or an fsspec URL.

A location is a :class:`~pathlib.Path` for the local file system, or a ``str`` URL with a
protocol (``s3://bucket/prefix``, ``gs://...``, ``file:///data/x``, ``memory://x``) handled by
`fsspec <https://filesystem-spec.readthedocs.io>`_, which is imported only when a URL is
used (``pip install 'stexture[storage]'``).

Writes are atomic either way, so a reader or a resumed run sees a file whole or not at all:
locally a ``.partial`` file is written, flushed to disk and renamed; through fsspec the
object is written in one ``pipe_file`` call (one whole-object PUT on an object store, where
objects appear whole and there is no cheap rename). A write never goes through a symbolic
link: the rename replaces a link at the target name, and the ``.partial`` file is created
new (never opened through a link or over a file of another kind).

Reads are bounded: :func:`read_bytes` and :func:`open_read` open only regular files (not a
FIFO, a device or a socket, also behind a link, so a scan cannot block or read without
end) and check a size cap before reading.

Options for URLs (endpoint, credentials: fsspec's ``storage_options``) come from the call
that takes them, over the defaults of :data:`STORAGE_OPTIONS_VARIABLE` (JSON), which the
``stexture`` command sets from ``--storage-option`` so that its worker processes and the
tasks of a Ray cluster see the same ones (:func:`using_storage_options`); for S3 the usual
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) applies below both.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .._storage_options import (
    STORAGE_OPTIONS_VARIABLE,
    default_storage_options,
    storage_options_for,
    using_storage_options,
)

__all__ = [
    "PARTIAL_SUFFIX",
    "STORAGE_OPTIONS_VARIABLE",
    "Location",
    "default_storage_options",
    "is_dir",
    "is_file",
    "is_url",
    "join",
    "list_dir",
    "location",
    "make_dirs",
    "name",
    "open_read",
    "parent",
    "read_bytes",
    "remove",
    "remove_partial",
    "sha256_of",
    "storage_options_for",
    "using_storage_options",
    "walk_files",
    "write_atomically",
]

Location = Path | str
PARTIAL_SUFFIX = ".partial"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | Path) -> bool:
    """True for a ``protocol://...`` string (a ``Path`` never is one)."""
    return isinstance(path, str) and _URL.match(path) is not None


def location(path: str | Path) -> Location:
    """A URL stays a string (without a trailing slash); anything else becomes a ``Path``."""
    if is_url(path):
        return str(path) if str(path).endswith("://") else str(path).rstrip("/")
    return Path(path)


def _fs(url: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ValueError(f"{url} is a URL: reading and writing URLs needs fsspec "
                         "(pip install 'stexture[storage]')") from None
    try:
        return url_to_fs(url, **storage_options_for(options))
    except ImportError as exc:  # the protocol's package (s3fs, gcsfs) is missing
        raise ValueError(f"{url}: {exc} (pip install 'stexture[storage]')") from None


def join(base: Location, name: str) -> Location:
    """``base/name`` (``name`` may hold ``/``)."""
    if isinstance(base, Path):
        return base / name
    return f"{base.rstrip('/')}/{name}"


def parent(loc: Location) -> Location:
    if isinstance(loc, Path):
        return loc.parent
    return loc.rstrip("/").rpartition("/")[0]


def name(loc: Location) -> str:
    """The last component: ``train-000000.tar``."""
    if isinstance(loc, Path):
        return loc.name
    return posixpath.basename(loc.rstrip("/"))


def is_file(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.is_file()
    fs, path = _fs(loc)
    return fs.isfile(path)


def is_dir(loc: Location) -> bool:
    if isinstance(loc, Path):
        return loc.is_dir()
    fs, path = _fs(loc)
    return fs.isdir(path)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a link")):
        if test(mode):
            return kind
    return "not a regular file"


def _check_size(loc: Location, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise OSError(f"{loc}: {size} bytes, over the limit of {max_bytes} for one file")


@contextmanager
def open_read(loc: Location, max_bytes: int | None = None, *,
              storage_options: dict[str, Any] | None = None) -> Iterator[IO[bytes]]:
    """A regular file opened for binary reading; ``OSError`` naming what it is instead (a
    FIFO, a device, a socket, a folder, also behind a link: opened without blocking and
    checked before a byte is read) or when it is larger than ``max_bytes``. A URL is opened
    with ``storage_options`` over the defaults (:func:`storage_options_for`)."""
    if isinstance(loc, Path):
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(loc, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{loc}: {_kind(info.st_mode)}, not a regular file")
            _check_size(loc, info.st_size, max_bytes)
            f = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
        return
    fs, path = _fs(loc, storage_options)
    info = fs.info(path)
    if info.get("type") != "file":
        raise OSError(f"{loc}: {info.get('type')}, not a file")
    _check_size(loc, int(info.get("size") or 0), max_bytes)
    with fs.open(path, "rb") as f:
        yield f


def read_bytes(loc: Location, max_bytes: int | None = None) -> bytes:
    """The whole file, a regular one of at most ``max_bytes`` (see :func:`open_read`);
    ``OSError`` (e.g. ``FileNotFoundError``) when it cannot be read."""
    with open_read(loc, max_bytes) as f:
        if max_bytes is None:
            data = f.read()
        else:
            # read(n) allocates n bytes at once: ask for the declared size (within the
            # limit) and one byte more, and for the rest of the limit only if it grew
            want = min(_declared_size(f, max_bytes), max_bytes) + 1
            data = f.read(want)
            if len(data) == want <= max_bytes:
                data += f.read(max_bytes + 1 - want)
    _check_size(loc, len(data), max_bytes)  # it grew while it was read
    return data


def _declared_size(f: IO[bytes], default: int) -> int:
    """The size an open file declares: a local file's ``fstat``, an fsspec file's ``size``."""
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        size = getattr(f, "size", None)
        return int(size) if isinstance(size, int) else default


def sha256_of(loc: Location) -> str:
    digest = hashlib.sha256()
    with open_read(loc) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_dirs(loc: Location) -> None:
    if isinstance(loc, Path):
        loc.mkdir(parents=True, exist_ok=True)
        return
    fs, path = _fs(loc)
    fs.makedirs(path, exist_ok=True)


def list_dir(folder: Location) -> tuple[list[str], list[str]]:
    """The names of the files and of the folders directly in ``folder``, sorted (none when
    it does not exist)."""
    if isinstance(folder, Path):
        if not folder.is_dir():
            return [], []
        entries = [(p.name, p.is_dir()) for p in folder.iterdir()]
    else:
        fs, path = _fs(folder)
        if not fs.isdir(path):
            return [], []
        entries = [(posixpath.basename(entry["name"].rstrip("/")), entry["type"] == "directory")
                   for entry in fs.ls(path, detail=True)]
    return (sorted(n for n, folder_ in entries if not folder_),
            sorted(n for n, folder_ in entries if folder_))


def walk_files(root: Location) -> list[str]:
    """Every file under ``root`` as a sorted relative POSIX path (broken links included: they
    are reported unreadable later)."""
    if isinstance(root, Path):
        return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))
                if not p.is_dir()]
    fs, path = _fs(root)
    prefix = path.rstrip("/") + "/"
    return sorted(found[len(prefix):] for found in fs.find(path, withdirs=False)
                  if found.startswith(prefix))


def remove(loc: Location) -> None:
    """Delete a file (a link itself, never its target); one that is not there is not an
    error. Callers remove only names their own record gives."""
    if isinstance(loc, Path):
        loc.unlink(missing_ok=True)
        return
    fs, path = _fs(loc)
    if fs.isfile(path):
        fs.rm_file(path)


def _partial_of(loc: Path) -> Path:
    return loc.with_name(loc.name + PARTIAL_SUFFIX)


def remove_partial(loc: Location) -> None:
    """Delete the ``.partial`` file a killed :func:`write_atomically` of ``loc`` left (a
    regular file by that name; anything else there is refused, not removed)."""
    if not isinstance(loc, Path):
        return  # nothing partial is written through fsspec
    partial_path = _partial_of(loc)
    try:
        mode = partial_path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OSError(f"{partial_path} is {_kind(mode)}, not a file stexture left: move it "
                      "away")
    partial_path.unlink()


def write_atomically(loc: Location, payload: bytes) -> None:
    """Write ``payload`` so that ``loc`` holds either nothing new or all of it.

    Locally: create ``loc + .partial`` (exclusively and without following a link, after
    :func:`remove_partial` of one a killed run left), flush it to disk, rename it over
    ``loc`` (replacing a link there, not writing through it) and flush the folder. Through
    fsspec: one whole-object write.
    """
    if not isinstance(loc, Path):
        fs, path = _fs(loc)
        fs.pipe_file(path, payload)
        return
    remove_partial(loc)
    partial_path = _partial_of(loc)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    fd = os.open(partial_path, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial_path, loc)
    finally:
        partial_path.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(loc.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
