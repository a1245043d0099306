"""Listing the inputs of ``stexture decompose``: an image folder tree, a CSV/JSONL manifest,
or existing WebDataset shards.

Every source becomes a sorted list of :class:`SourceItem` (a stable key, a label, and where
to read the bytes), plus the problems found while listing (an empty class folder, a file
outside any class folder, a manifest row without a label). Listing reads no pixels.

A source may be a local path or an fsspec URL (see :mod:`.storage`); the items of a URL
source are URLs too, so workers on other machines can read them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import storage
from .format import MANIFEST_NAME, group_samples, read_tar_members
from .storage import Location

__all__ = [
    "IMAGE_EXTENSIONS",
    "Listing",
    "SourceItem",
    "label_problem",
    "list_sources",
    "read_items",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
     ".pbm", ".pnm"}
)
_SHARD_IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class SourceItem:
    """One input: ``key`` (unique, dot-free), ``label`` (class name), ``source`` (how it is
    named in records and reports), ``path`` (the file, or the tar holding it) and ``member``
    (the tar member name, ``""`` for a plain file)."""

    key: str
    label: str
    source: str
    path: str
    member: str = ""


@dataclass(frozen=True)
class Listing:
    """What :func:`list_sources` found: items sorted by key, problems as ``(source, reason,
    detail)``, and how many files were skipped for not having an image extension."""

    items: list[SourceItem]
    problems: list[tuple[str, str, str]]
    ignored: int


def key_from_relative_path(relative: str) -> str:
    """A stable, dot-free key: every character outside ``[A-Za-z0-9_-]`` becomes ``_``."""
    return _UNSAFE_KEY_CHARS.sub("_", relative)


def _unique_keys(raw: list[tuple[str, str, str, str, str]]) -> list[SourceItem]:
    """Items from ``(relative, label, source, path, member)``; keys that collide after
    sanitising get a suffix from a hash of the relative path."""
    by_key: dict[str, list[tuple[str, str, str, str, str]]] = defaultdict(list)
    for entry in raw:
        by_key[key_from_relative_path(entry[0])].append(entry)
    items = []
    for key, entries in by_key.items():
        for relative, label, source, path, member in entries:
            suffix = ""
            if len(entries) > 1:
                suffix = "_" + hashlib.sha1(relative.encode("utf-8")).hexdigest()[:10]
            items.append(SourceItem(key + suffix, label, source, path, member))
    return sorted(items, key=lambda item: item.key)


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a class name, or ``None``: a control character or a line or
    paragraph separator would print as a row of its own in every table of classes (a fake
    class) and break the one-line records that name it."""
    bad = [c for c in label if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
    if not bad:
        return None
    return (f"the class name {label!r} holds the control character {bad[0]!r}; rename it "
            "(a class name is one line of printable text)")


def _checked(raw: list[tuple[str, str, str, str, str]],
             problems: list[tuple[str, str, str]]) -> list[tuple[str, str, str, str, str]]:
    """``raw`` without the entries whose label cannot be a class name, each of those
    added to ``problems`` as ``bad_label``."""
    kept = []
    for entry in raw:
        problem = label_problem(entry[1])
        if problem is None:
            kept.append(entry)
        else:
            problems.append((entry[2], "bad_label", problem))
    return kept


def _list_folder(root: Location) -> Listing:
    raw, problems, ignored = [], [], 0
    for relative in storage.walk_files(root):
        parts = relative.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if PurePosixPath(relative).suffix.lower() not in IMAGE_EXTENSIONS:
            ignored += 1
            continue
        if len(parts) < 2:
            problems.append((relative, "no_class", "an image directly in the source folder, "
                             "outside any class folder"))
            continue
        raw.append((relative, parts[0], relative, str(storage.join(root, relative)), ""))
    labelled = {entry[1] for entry in raw}
    for folder in storage.list_dir(root)[1]:
        if folder.startswith(".") or folder in labelled:
            continue
        link = storage.join(root, folder)
        if isinstance(link, Path) and link.is_symlink():
            problems.append((folder, "linked_folder", f"a class folder that is a symbolic "
                             f"link (to {os.readlink(link)}): links to folders are not "
                             "followed (a link can loop or leave the source); copy the "
                             "folder in, or list its images in a CSV manifest"))
        else:
            problems.append((folder, "empty_class", "a class folder with no image files"))
    return Listing(_unique_keys(_checked(raw, problems)), problems, ignored)


# a manifest of a million rows is a few hundred MB at most; a bigger file is no manifest
_MAX_MANIFEST_BYTES = 1 << 30


def _jsonl_row(path: Location, number: int, line: str) -> dict[str, str]:
    """A JSONL line as ``{field: text}``; ``path`` and ``label`` must be strings (or a label
    an integer), so that a list or an object never becomes a class name."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}, line {number}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}, line {number}: a JSON {type(row).__name__}, not an object "
                         "with path and label")
    for name in ("path", "label"):
        value = row.get(name)
        if name == "label" and isinstance(value, int) and not isinstance(value, bool):
            continue
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path}, line {number}: {name} must be a string, got "
                             f"{json.dumps(value)}")
    return {k: str(v) for k, v in row.items() if isinstance(v, str | int)
            and not isinstance(v, bool)}


def _manifest_rows(path: Location) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        text = storage.read_bytes(path, _MAX_MANIFEST_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    if _suffix(path) == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, _jsonl_row(path, number, line)
        return
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
        raise ValueError(f"{path}: a CSV manifest needs a header with columns path,label; "
                         f"found {reader.fieldnames}")
    for number, row in enumerate(reader, start=2):
        yield number, {k: v for k, v in row.items() if k is not None and v is not None}


def _suffix(loc: Location) -> str:
    return PurePosixPath(storage.name(loc)).suffix.lower()


def _list_manifest(manifest: Location) -> Listing:
    base = storage.parent(manifest)
    manifest_name = storage.name(manifest)
    raw, problems = [], []
    for number, row in _manifest_rows(manifest):
        name = row.get("path", "").strip()
        label = row.get("label", "").strip()
        if not name:
            problems.append((f"{manifest_name}:{number}", "unreadable", "a row without a path"))
            continue
        if not label:
            problems.append((name, "no_class", f"{manifest_name} line {number} has no label"))
            continue
        path = storage.location(name)
        if isinstance(path, Path) and not path.is_absolute():
            path = storage.join(base, name)
        relative = name.lstrip("/")
        raw.append((relative, label, name, str(path), ""))
    return Listing(_unique_keys(_checked(raw, problems)), problems, 0)


def _class_names_of(folder: Location) -> list[str] | None:
    path = storage.join(folder, MANIFEST_NAME)
    if not storage.is_file(path):
        return None
    try:
        names = json.loads(storage.read_bytes(path, _MAX_MANIFEST_BYTES).decode("utf-8"))
        names = names["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def _list_shards(tars: list[Location], base: Location) -> Listing:
    names = _class_names_of(base)
    raw, problems = [], []
    for tar_path in tars:
        samples: dict[str, dict[str, str]] = {}
        cls_of: dict[str, str] = {}
        json_of: dict[str, bytes] = {}
        tar_name = storage.name(tar_path)
        try:
            with storage.open_read(tar_path) as f:
                # grouped as every reader of shards groups them: a member out of its sample
                # (a trailing KEY.cls that would relabel it) makes the tar unreadable here too
                members = ((name, (name, payload)) for name, payload in read_tar_members(f))
                for key, fields in group_samples(members, tar_name):
                    samples[key] = {field: name for field, (name, _) in fields.items()}
                    if "cls" in fields:
                        cls_of[key] = fields["cls"][1].decode("ascii", "replace").strip()
                    if "json" in fields:
                        json_of[key] = fields["json"][1]
        except (OSError, ValueError) as exc:
            problems.append((tar_name, "unreadable", f"damaged tar file ({exc})"))
            continue
        for key in sorted(samples):
            fields = samples[key]
            source = f"{tar_name}:{key}"
            image_field = next((f for f in _SHARD_IMAGE_FIELDS if f in fields), None)
            if image_field is None:
                problems.append((source, "not_an_image", "the sample has no image field"))
                continue
            label = _label_of(cls_of.get(key), json_of.get(key), names)
            if label is None:
                problems.append((source, "no_class", "the sample has no usable cls field"))
                continue
            relative = f"{PurePosixPath(tar_name).stem}/{key}"
            raw.append((relative, label, source, str(tar_path), fields[image_field]))
    return Listing(_unique_keys(_checked(raw, problems)), problems, 0)


def _label_of(cls: str | None, record: bytes | None, names: list[str] | None) -> str | None:
    if record is not None:
        try:
            name = json.loads(record).get("class_name")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            name = None
        if isinstance(name, str) and name:
            return name
    if cls is None or not cls.lstrip("-").isdigit():
        return None
    if names is not None and 0 <= int(cls) < len(names):
        return names[int(cls)]
    # zero-padded so that sorting the names keeps the numeric order of the indices
    return f"{int(cls):06d}"


def list_sources(src: str | Path) -> Listing:
    """List the inputs under ``src``.

    ``src`` is one of: a folder of class folders (``src/<class>/<...>/<image>``); a ``.csv``
    (columns ``path,label``) or ``.jsonl`` (objects with ``path`` and ``label``) file whose
    relative paths are taken from the file's folder; a ``.tar`` WebDataset shard, or a
    folder of them (image field + ``cls``; class names from a ``json`` field's
    ``class_name`` or a ``manifest.json`` beside the shards). Any of them may be an fsspec
    URL (``s3://bucket/photos``).
    """
    src = storage.location(src)
    if storage.is_file(src):
        suffix = _suffix(src)
        if suffix in (".csv", ".jsonl"):
            return _list_manifest(src)
        if suffix == ".tar":
            return _list_shards([src], storage.parent(src))
        raise ValueError(f"source {src} is a file but not a .csv, .jsonl or .tar")
    if not storage.is_dir(src):
        raise FileNotFoundError(f"source {src} does not exist")
    files, folders = storage.list_dir(src)
    tars = [storage.join(src, n) for n in files if n.endswith(".tar")]
    if tars and not any(not folder.startswith(".") for folder in folders):
        return _list_shards(tars, src)
    return _list_folder(src)


def read_items(items: Iterable[SourceItem], max_bytes: int | None = None
               ) -> Iterator[tuple[SourceItem, bytes | OSError]]:
    """The bytes of each item, in order (an ``OSError`` in place of the bytes when a file
    cannot be read: not a regular file, or over ``max_bytes``, see
    :func:`~stexture.shards.storage.read_bytes`). Consecutive members of one tar are read in
    one pass over it."""
    items = list(items)
    position = 0
    while position < len(items):
        item = items[position]
        if not item.member:
            try:
                yield item, storage.read_bytes(storage.location(item.path), max_bytes)
            except OSError as exc:
                yield item, exc
            position += 1
            continue
        end = position
        while end < len(items) and items[end].path == item.path and items[end].member:
            end += 1
        yield from _read_tar_members(items[position:end], max_bytes)
        position = end


def _read_tar_members(items: list[SourceItem], max_bytes: int | None
                      ) -> Iterator[tuple[SourceItem, bytes | OSError]]:
    """The members ``items`` name, from one pass over their tar (bounded reads)."""
    wanted = {item.member for item in items}
    found: dict[str, bytes] = {}
    failure: OSError | None = None
    try:
        with storage.open_read(storage.location(items[0].path)) as f:
            for member, payload in read_tar_members(f):
                if member in wanted:
                    found[member] = payload
    except (OSError, ValueError) as exc:
        failure = OSError(f"{items[0].path}: {exc}")
    for item in items:
        data: bytes | OSError | None = found.get(item.member)
        if data is None:
            data = failure or OSError(f"{item.member} is not in {item.path}")
        elif max_bytes is not None and len(data) > max_bytes:
            data = OSError(f"{item.path}:{item.member}: {len(data)} bytes, over the limit "
                           f"of {max_bytes} for one file")
        yield item, data
