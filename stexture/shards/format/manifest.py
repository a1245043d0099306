"""The files beside the shards: ``manifest.json`` (read and checked) and ``index.csv``."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...smoothing import METHODS
from .. import storage
from .codecs import DEFAULT_MAX_PIXELS

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
REJECTED_NAME = "rejected.jsonl"
FORMAT_NAME = "stexture-shards"
#: The version this stexture writes: 3, the structure layer quantised by the writer's
#: ``structure_step`` (recorded in the manifest's settings; same field and reader as 2).
FORMAT_VERSION = 3
#: The format versions this stexture reads: 1 (structure as WebP), 2 (delta-zstd, lossless)
#: and 3 (delta-zstd, quantised).
READABLE_VERSIONS = (1, 2, FORMAT_VERSION)
_INDEX_COLUMNS = ("key", "split", "shard", "cls")


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``train-000000.tar``."""
    return f"{split}-{index:06d}.tar"


def read_index(root: str | Path, *, storage_options: dict[str, Any] | None = None
               ) -> list[dict[str, str]]:
    """The rows of ``root/index.csv`` (``key``, ``split``, ``shard``, ``cls``), ``root`` a
    folder or an fsspec URL (see :func:`read_manifest`); ``FileNotFoundError`` when it is
    missing, ``ValueError`` for a row lacking a column."""
    root = folder_location(root)
    path = storage.join(root, INDEX_NAME)
    text = read_beside(root, INDEX_NAME, storage_options, _MAX_INDEX_BYTES).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for number, row in enumerate(rows, start=2):
        if any(row.get(column) is None for column in _INDEX_COLUMNS):
            raise ValueError(f"{path}, line {number}: a row needs {', '.join(_INDEX_COLUMNS)}")
    return rows


@dataclass(frozen=True)
class ShardInfo:
    name: str
    count: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a shard directory.

    ``root`` is the folder: a :class:`~pathlib.Path`, or an fsspec URL (a ``str``, as
    :func:`~stexture.shards.storage.location` keeps it) read with ``storage_options``.
    """

    root: storage.Location
    classes: list[str]
    splits: dict[str, list[ShardInfo]]
    method: str
    params: dict[str, Any]
    raw: dict[str, Any]
    #: The most pixels a layer of these shards may declare: the reader's limit (what
    #: :func:`read_manifest` was given), never a number the manifest itself records.
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: fsspec options (endpoint, credentials) for a URL ``root``; the loaders and the shard
    #: cache read its shards with them. Never printed (it may hold a secret).
    storage_options: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def is_remote(self) -> bool:
        """Whether the shards are at a URL (read through the shard cache)."""
        return isinstance(self.root, str)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in self.splits:
            raise ValueError(
                f"split {split!r} is not in {storage.join(self.root, MANIFEST_NAME)}; "
                f"it has {', '.join(self.splits) or 'no splits'}"
            )
        return self.splits[split]

    def shard_paths(self, split: str) -> list[str]:
        return [str(storage.join(self.root, s.name)) for s in self.shards(split)]

    def count(self, split: str) -> int:
        return sum(s.count for s in self.shards(split))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_member_file_name(name: object, where: str) -> str:
    """``name`` if it is a plain file name inside its folder (what the writer records);
    ``ValueError`` naming ``where`` for anything else: an absolute path, a ``..``, a folder
    separator, an empty name. Confines every path a manifest or progress file names."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise ValueError(f"{where} names {name!r}: a shard must be a plain file name in its "
                         "folder (no absolute path, no '..', no folder)")
    return name


def _shard_infos(entry: Any, where: str, seen: set[str]) -> list[ShardInfo]:
    infos = []
    for shard in entry["shards"]:
        name = check_member_file_name(shard["name"], where)
        if name in seen:
            raise ValueError(f"{where} lists shard {name!r} twice")
        seen.add(name)
        count = shard["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{where}: shard {name!r} has count {count!r}, not an integer >= 0")
        if not isinstance(shard["sha256"], str) or not _SHA256.match(shard["sha256"]):
            raise ValueError(f"{where}: shard {name!r} has no SHA-256 of 64 hex digits")
        infos.append(ShardInfo(name, count, shard["sha256"]))
    return infos


def _readable_formats() -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """format name -> (the versions, the methods) this stexture reads: shard folders, and the
    soft-label sidecars of :mod:`.labels`, whose manifest is read as a shard manifest."""
    from .. import labels  # imported here: labels builds on this package

    return {FORMAT_NAME: (READABLE_VERSIONS, tuple(METHODS)),
            labels.LABELS_FORMAT: ((labels.LABELS_VERSION,), (labels.METHOD,))}


def _check_format(raw: Any, path: storage.Location) -> None:
    """``ValueError`` naming what a reader of this version cannot read: another format, a
    format version it does not know (a newer stexture's, say), or a method it does not know
    (its layers could not be checked, nor its recorded settings reproduced)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a valid stexture manifest: not a JSON object")
    formats = _readable_formats()
    name = raw.get("format")
    if name not in formats:
        raise ValueError(f"{path}: format {name!r} is not one this stexture reads "
                         f"({', '.join(formats)})")
    versions, methods = formats[name]
    version = raw.get("format_version")
    if isinstance(version, bool) or version not in versions:
        raise ValueError(
            f"{path}: format_version {version!r} is unknown to this stexture, which reads "
            f"versions {', '.join(map(str, versions))} of {name} (written by a newer "
            "stexture? upgrade it)")
    method = raw.get("method")
    if not isinstance(method, str) or method not in methods:
        raise ValueError(f"{path}: method {method!r} is unknown to this stexture (it knows "
                         f"{', '.join(methods)})")
    if not isinstance(raw.get("params"), dict):
        raise ValueError(f"{path}: params must be an object, got {raw.get('params')!r}")


def read_manifest(root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, *,
                  storage_options: dict[str, Any] | None = None) -> Manifest:
    """Read ``root/manifest.json``; ``FileNotFoundError``/``ValueError`` that say what is wrong.

    ``root`` is a folder or an fsspec URL (``s3://bucket/shards``, ``gs://...``,
    ``https://...``; ``file://`` URLs are read as the local folder), read with
    ``storage_options`` (endpoint, credentials; the environment applies as well, e.g.
    ``AWS_ENDPOINT_URL``). For a URL, a missing object or bucket gives
    ``FileNotFoundError``, refused credentials ``PermissionError``, and an endpoint that
    cannot be reached a one-line
    :class:`~stexture.shards.cache.StorageUnreachableError`; each names the URL.

    The format must be ``stexture-shards`` of a version in :data:`READABLE_VERSIONS`, made by
    a method this stexture knows (:func:`_check_format`). Every shard it names must be a plain
    file name in ``root``, listed once (across all splits), with a count and a SHA-256
    (:func:`check_member_file_name`): a manifest cannot send a reader to another folder or
    make it read a shard twice. ``max_pixels`` is the most pixels a layer may declare when the
    shards are read (:attr:`Manifest.max_pixels`); nothing in the file changes it.
    """
    root = folder_location(root)
    path = storage.join(root, MANIFEST_NAME)
    data = read_beside(root, MANIFEST_NAME, storage_options, _MAX_MANIFEST_BYTES)
    try:
        raw = json.loads(data.decode("utf-8"))
        _check_format(raw, path)
        seen: set[str] = set()
        splits = {split: _shard_infos(entry, str(path), seen)
                  for split, entry in raw["splits"].items()}
        classes = raw["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{path}: classes must be a list of names")
        return Manifest(root, list(classes), splits, raw["method"], raw["params"], raw,
                        max_pixels, dict(storage_options or {}) if isinstance(root, str)
                        else None)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError
            ) as exc:
        raise ValueError(f"{path} is not a valid stexture manifest: {exc!r}") from exc


# -- the folder's own files, local or at a URL ----------------------------------------------

_MAX_MANIFEST_BYTES = 256 << 20  # a manifest of a million shards is ~150 MB
_MAX_INDEX_BYTES = 1 << 30  # ~40 bytes a sample: tens of millions of samples
_REMOTE_TRIES = 3  # for a transient error (a reset connection, a 5xx)
_REMOTE_BACKOFF = 0.25


def folder_location(root: str | Path) -> storage.Location:
    """A shard folder's location: a ``Path``, or a URL kept as a ``str`` (never through
    ``Path``, which turns ``s3://b/x`` into ``s3:/b/x``). A ``file://`` URL is its local
    path, read in place like any folder."""
    loc = storage.location(root if isinstance(root, Path) else str(root))
    if isinstance(loc, str) and loc.startswith("file://"):
        return Path(loc[len("file://"):] or "/")
    return loc


def read_beside(root: storage.Location, name: str, storage_options: dict[str, Any] | None,
                max_bytes: int) -> bytes:
    """The bytes of file ``name`` of the shard folder ``root`` (at most ``max_bytes``):
    ``FileNotFoundError`` saying it is not a folder ``stexture decompose`` wrote when it is
    missing; a local one that is not a regular file (a FIFO, a device, a folder) refused
    with an ``OSError`` naming what it is, before a byte is read (:func:`storage.read_bytes`);
    for a URL, the storage's errors turned into messages naming the URL (see
    :func:`read_manifest`), transient ones tried :data:`_REMOTE_TRIES` times first."""
    loc = storage.join(root, name)
    if isinstance(loc, Path):
        try:
            return storage.read_bytes(loc, max_bytes)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(f"no {name} in {root}: is it a directory written by "
                                    "`stexture decompose`?") from None
    from ..cache.client import open_filesystem

    fs, path = open_filesystem(loc, storage_options)
    for attempt in range(_REMOTE_TRIES):
        try:
            size = int(fs.info(path).get("size") or 0)
            if size > max_bytes:
                raise OSError(f"{loc}: {size} bytes, over the limit of {max_bytes}")
            return fs.cat_file(path)
        except Exception as exc:  # noqa: BLE001 - every storage error gets a clear message
            error = _remote_error(exc, root, loc, name, fs, storage_options,
                                  may_retry=attempt + 1 < _REMOTE_TRIES)
            if error is not None:
                raise error from None
            time.sleep(_REMOTE_BACKOFF * 2 ** attempt)
    raise AssertionError("unreachable")  # the last try returns or raises


def _remote_error(exc: Exception, root: str, loc: str, name: str, fs: Any,
                  storage_options: dict[str, Any] | None, may_retry: bool
                  ) -> Exception | None:
    """The error to raise for ``exc``, reading ``loc``; None for a transient one while
    another try is allowed."""
    from ..cache.client import describe_endpoint
    from ..cache.errors import StorageUnreachableError, _cannot_connect, _is_transient, _one_line

    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, FileNotFoundError) and _cannot_reach_host(loc):
        # fsspec's HTTP file system reports a refused connection as a missing file
        return StorageUnreachableError(f"cannot reach the storage of {root} (endpoint "
                                       f"{describe_endpoint(root, storage_options)})")
    if isinstance(exc, FileNotFoundError):
        where = _missing_bucket(fs, loc)
        return FileNotFoundError(
            f"no {name} at {loc}" + (f": bucket {where!r} does not exist" if where else
                                     f"; is {root} a folder written by `stexture decompose`?"))
    if "NoCredentialsError" in names:
        return PermissionError(f"no credentials to read {loc}: pass storage_options "
                               "(key/secret, or anon=True for a public bucket), or set "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3")
    if isinstance(exc, PermissionError):
        return PermissionError(f"the storage refused to read {loc} (check the credentials: "
                               "storage_options key/secret, or AWS_ACCESS_KEY_ID / "
                               f"AWS_SECRET_ACCESS_KEY for S3): {_one_line(exc)}")
    if _cannot_connect(exc):
        return StorageUnreachableError(
            f"cannot reach the storage of {root} (endpoint "
            f"{describe_endpoint(root, storage_options)}): {_one_line(exc)}")
    if _is_transient(exc) and may_retry:
        return None
    return OSError(f"cannot read {loc}: {_one_line(exc)}")


def _cannot_reach_host(loc: str) -> bool:
    """For an ``http(s)://`` URL: whether its host refuses a TCP connection (or none comes
    within 3 s)."""
    if not loc.startswith(("http://", "https://")):
        return False
    parts = urllib.parse.urlsplit(loc)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "", port), timeout=3).close()
    except (OSError, ValueError):
        return True
    return False


def _missing_bucket(fs: Any, loc: str) -> str | None:
    """The bucket of ``loc`` when the object store says it does not exist (one more
    request, made only when a read found nothing)."""
    if not loc.startswith(("s3://", "s3a://", "gs://", "gcs://")):
        return None
    bucket = loc.split("://", 1)[1].split("/", 1)[0]
    try:
        return None if fs.exists(bucket) else bucket
    except Exception:  # noqa: BLE001 - the message without the bucket is still right
        return None
