"""The files beside the shards: ``manifest.json`` (read and checked) and ``index.csv``."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...smoothing import METHODS
from .codecs import DEFAULT_MAX_PIXELS

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
REJECTED_NAME = "rejected.jsonl"
FORMAT_NAME = "stexture-shards"
FORMAT_VERSION = 2
#: The format versions this stexture reads: 1 (structure as WebP) and 2 (delta-zstd).
READABLE_VERSIONS = (1, FORMAT_VERSION)
_INDEX_COLUMNS = ("key", "split", "shard", "cls")


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``train-000000.tar``."""
    return f"{split}-{index:06d}.tar"


def read_index(root: str | Path) -> list[dict[str, str]]:
    """The rows of ``root/index.csv`` (``key``, ``split``, ``shard``, ``cls``);
    ``FileNotFoundError`` when it is missing, ``ValueError`` for a row lacking a column."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {INDEX_NAME} in {root}: is it a directory written by "
                                "`stexture decompose`?")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
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
    """What ``manifest.json`` says about a shard directory."""

    root: Path
    classes: list[str]
    splits: dict[str, list[ShardInfo]]
    method: str
    params: dict[str, Any]
    raw: dict[str, Any]
    #: The most pixels a layer of these shards may declare: the reader's limit (what
    #: :func:`read_manifest` was given), never a number the manifest itself records.
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def shards(self, split: str) -> list[ShardInfo]:
        if split not in self.splits:
            raise ValueError(
                f"split {split!r} is not in {self.root / MANIFEST_NAME}; "
                f"it has {', '.join(self.splits) or 'no splits'}"
            )
        return self.splits[split]

    def shard_paths(self, split: str) -> list[str]:
        return [str(self.root / s.name) for s in self.shards(split)]

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


def _check_format(raw: Any, path: Path) -> None:
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


def read_manifest(root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Manifest:
    """Read ``root/manifest.json``; ``FileNotFoundError``/``ValueError`` that say what is wrong.

    The format must be ``stexture-shards`` of a version in :data:`READABLE_VERSIONS`, made by
    a method this stexture knows (:func:`_check_format`). Every shard it names must be a plain
    file name in ``root``, listed once (across all splits), with a count and a SHA-256
    (:func:`check_member_file_name`): a manifest cannot send a reader to another folder or
    make it read a shard twice. ``max_pixels`` is the most pixels a layer may declare when the
    shards are read (:attr:`Manifest.max_pixels`); nothing in the file changes it.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {root}: is it a directory written by `stexture decompose`?"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        _check_format(raw, path)
        seen: set[str] = set()
        splits = {split: _shard_infos(entry, str(path), seen)
                  for split, entry in raw["splits"].items()}
        classes = raw["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{path}: classes must be a list of names")
        return Manifest(root, list(classes), splits, raw["method"], raw["params"], raw,
                        max_pixels)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError
            ) as exc:
        raise ValueError(f"{path} is not a valid stexture manifest: {exc!r}") from exc
