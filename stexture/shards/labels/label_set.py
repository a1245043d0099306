"""A label set: its manifest read and checked against the shards', the sets of a
folder, and the set named in the shard folder's manifest."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..format import (
    MANIFEST_NAME,
    Manifest,
    read_manifest,
)
from ..storage import sha256_of
from .layout import (
    _FOLDER_PREFIX,
    METHOD,
    label_folder,
)


@dataclass(frozen=True)
class LabelSet:
    """A sidecar as its manifest describes it.

    ``manifest`` is the sidecar manifest read as a shard manifest (its ``splits`` name the
    sidecar shards); ``info`` its ``labels`` record (grid, top-k, temperature, teachers,
    folds, source digests).
    """

    name: str
    folder: Path
    manifest: Manifest
    info: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def grid(self) -> int:
        return int(self.info["grid"])

    @property
    def topk(self) -> int | None:
        return self.info.get("topk")

    @property
    def temperature(self) -> float:
        return float(self.info["temperature"])

    @property
    def source(self) -> dict[str, str]:
        """Shard name -> SHA-256 of the shard the labels were made from."""
        return dict(self.info["source"])


def label_set_names(root: str | Path) -> list[str]:
    """The label sets of a shard folder: those its manifest names, then any other
    ``labels-*`` folder with a manifest (named nowhere yet: a manifest rewritten since)."""
    named = list(read_manifest(root).raw.get("labels", {}) or {})
    found = sorted(p.name[len(_FOLDER_PREFIX):] for p in Path(root).glob(f"{_FOLDER_PREFIX}*")
                   if (p / MANIFEST_NAME).is_file())
    return named + [name for name in found if name not in named]


def read_label_set(root: str | Path | Manifest, name: str | None = None) -> LabelSet:
    """The label set ``name`` of the shard folder ``root`` (``None``: its only one).

    ``FileNotFoundError`` when there is none; ``ValueError`` when the sidecar is not a label
    set, or was made from other shards than ``root``'s (another SHA-256 or other shards)
    or for other classes.
    """
    manifest = root if isinstance(root, Manifest) else read_manifest(root)
    if name is None:
        names = label_set_names(manifest.root)
        if not names:
            raise FileNotFoundError(f"{manifest.root} has no label set: write one with "
                                    "`stexture label`")
        if len(names) > 1:
            raise ValueError(f"{manifest.root} has label sets {', '.join(names)}: name one "
                             "(label_set=...)")
        name = names[0]
    folder = label_folder(manifest.root, name)
    if not (folder / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"no label set {name!r} in {manifest.root} (no "
                                f"{folder / MANIFEST_NAME}): write it with `stexture label`")
    sidecar = read_manifest(folder)
    info = sidecar.raw.get("labels")
    if sidecar.method != METHOD or not isinstance(info, dict):
        raise ValueError(f"{folder / MANIFEST_NAME} is not a soft-label manifest")
    labels = LabelSet(name, folder, sidecar, info)
    _check_matches(labels, manifest)
    return labels


def _check_matches(labels: LabelSet, manifest: Manifest) -> None:
    """The sidecar must be of these shards: same classes, same shards, same digests."""
    where = f"label set {labels.name!r} ({labels.folder})"
    if labels.classes != manifest.classes:
        raise ValueError(f"{where} has classes {labels.classes}, the shards "
                         f"{manifest.classes}: it was made for other shards")
    ours = {info.name: info.sha256 for infos in manifest.splits.values() for info in infos}
    source = labels.source
    changed = sorted(n for n in ours if n in source and source[n] != ours[n])
    missing = sorted(set(ours) - set(source))
    extra = sorted(set(source) - set(ours))
    if changed or missing or extra:
        parts = [f"{what}: {', '.join(names[:3])}" for what, names in
                 (("changed since labelling", changed), ("not labelled", missing),
                  ("not among the shards", extra)) if names]
        raise ValueError(f"{where} was made from other shards ({'; '.join(parts)}): label "
                         "them again with `stexture label --overwrite`")


def register_label_set(root: str | Path, name: str) -> None:
    """Name the label set in the shard folder's ``manifest.json`` (``labels``: folder and
    the SHA-256 of its manifest), rewritten atomically (partial file + rename); every other
    entry is kept as it is."""
    path = Path(root) / MANIFEST_NAME
    raw = json.loads(path.read_text(encoding="utf-8"))
    folder = label_folder(root, name)
    entry = {"folder": folder.name, "sha256": sha256_of(folder / MANIFEST_NAME)}
    entries = raw.get("labels") if isinstance(raw.get("labels"), dict) else {}
    raw["labels"] = {**entries, name: entry}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
