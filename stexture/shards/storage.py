"""Where sources and shards live: a local path, or an fsspec URL.

A location is a :class:`~pathlib.Path` for the local file system, or a ``str`` URL with a
protocol (``s3://bucket/prefix``, ``gs://...``, ``file:///data/x``, ``memory://x``) handled by
`fsspec <https://filesystem-spec.readthedocs.io>`_, which is imported only when a URL is
used (it comes with ``pip install stexture[ray]``).

Writes are atomic either way, so a reader or a resumed run sees a file whole or not at all:
locally a ``.partial`` file is written, flushed to disk and renamed; through fsspec the
object is written in one ``pipe_file`` call (one whole-object PUT on an object store, where
objects appear whole and there is no cheap rename).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PARTIAL_SUFFIX",
    "Location",
    "is_dir",
    "is_file",
    "is_url",
    "join",
    "list_dir",
    "location",
    "make_dirs",
    "name",
    "open_tar",
    "parent",
    "read_bytes",
    "remove",
    "sha256_of",
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


def _fs(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ValueError(f"{url} is a URL: reading and writing URLs needs fsspec "
                         "(pip install 'stexture[ray]' or pip install fsspec)") from None
    return url_to_fs(url)


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


def read_bytes(loc: Location) -> bytes:
    """The whole file (``OSError``, e.g. ``FileNotFoundError``, when it cannot be read)."""
    if isinstance(loc, Path):
        return loc.read_bytes()
    fs, path = _fs(loc)
    return fs.cat_file(path)


@contextmanager
def open_tar(loc: Location) -> Iterator[tarfile.TarFile]:
    """A tar file opened for reading (compressed or not)."""
    if isinstance(loc, Path):
        with tarfile.open(loc, mode="r:*") as tar:
            yield tar
        return
    fs, path = _fs(loc)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
        yield tar


def sha256_of(loc: Location) -> str:
    digest = hashlib.sha256()
    if isinstance(loc, Path):
        opened: IO[bytes] = open(loc, "rb")
    else:
        fs, path = _fs(loc)
        opened = fs.open(path, "rb")
    with opened as f:
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
    """Delete a file; one that is not there is not an error."""
    if isinstance(loc, Path):
        loc.unlink(missing_ok=True)
        return
    fs, path = _fs(loc)
    if fs.isfile(path):
        fs.rm_file(path)


def write_atomically(loc: Location, payload: bytes) -> None:
    """Write ``payload`` so that ``loc`` holds either nothing new or all of it.

    Locally: write ``loc + .partial``, flush it to disk, rename it over ``loc`` and flush the
    folder. Through fsspec: one whole-object write.
    """
    if not isinstance(loc, Path):
        fs, path = _fs(loc)
        fs.pipe_file(path, payload)
        return
    partial_path = loc.with_name(loc.name + PARTIAL_SUFFIX)
    try:
        with open(partial_path, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial_path, loc)
    finally:
        if partial_path.exists():
            partial_path.unlink()
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(loc.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
