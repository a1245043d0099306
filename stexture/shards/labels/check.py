"""The checks of ``stexture inspect`` on a folder's label sets, and a reader of every
sample of a split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..format import (
    MANIFEST_NAME,
    Manifest,
    iter_tar_samples,
    read_manifest,
    split_member_name,
    tar_member_offsets,
)
from ..storage import sha256_of
from .label_set import LabelSet, label_set_names, read_label_set
from .layout import LABEL_LAYERS
from .members import decode_label_sample


def check_label_set(root: str | Path, name: str, *, read_all: bool = True) -> list[str]:
    """Every inconsistency of label set ``name`` of ``root``, one sentence each (empty: it
    is consistent): the sidecar's manifest, its shards' files and SHA-256, that it was made
    from these shards (digests recorded against the shards' manifest), that every sample of
    every split has labels and no other key does (same keys in each sidecar shard as in its
    shard), the entry in the shard folder's manifest, and with ``read_all`` that every label
    sample decodes (grid, classes, probabilities summing to 1 within fp16 for dense maps)."""
    try:
        labels = read_label_set(root, name)
    except (FileNotFoundError, ValueError) as exc:
        return [str(exc)]
    manifest = read_manifest(root)
    problems = _check_registered(manifest, labels)
    for split in manifest.splits:
        problems += _check_split(manifest, labels, split, read_all)
    return problems


def _check_registered(manifest: Manifest, labels: LabelSet) -> list[str]:
    entry = (manifest.raw.get("labels") or {}).get(labels.name)
    if entry is None:
        return [f"label set {labels.name!r} is not named in {manifest.root / MANIFEST_NAME} "
                f"(rewritten since?): run `stexture label` with its settings again, which "
                "keeps its labels and names it"]
    digest = sha256_of(labels.folder / MANIFEST_NAME)
    if entry.get("sha256") != digest:
        return [f"{labels.folder / MANIFEST_NAME} changed since it was named in "
                f"{manifest.root / MANIFEST_NAME} (SHA-256 differs)"]
    return []


def _keys_of(path: Path) -> list[str]:
    keys: dict[str, None] = {}
    for name, _, _ in tar_member_offsets(path):
        key, field = split_member_name(name)
        if field:
            keys[key] = None
    return list(keys)


def _check_split(manifest: Manifest, labels: LabelSet, split: str, read_all: bool
                 ) -> list[str]:
    where = f"label set {labels.name!r}"
    try:
        sidecar = {info.name: info for info in labels.manifest.shards(split)}
    except ValueError:
        return [f"{where} has no split {split!r}"]
    problems = []
    for info in manifest.shards(split):
        label_info = sidecar.get(info.name)
        if label_info is None:
            problems.append(f"{where} has no labels for shard {info.name}")
            continue
        path = labels.folder / info.name
        if not path.is_file():
            problems.append(f"{where}: {path} is missing")
            continue
        if sha256_of(path) != label_info.sha256:
            problems.append(f"{where}: {path} changed since it was written (SHA-256 differs)")
            continue
        try:
            ours, theirs = _keys_of(manifest.root / info.name), _keys_of(path)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if ours != theirs:
            missing = sorted(set(ours) - set(theirs))
            extra = sorted(set(theirs) - set(ours))
            problems.append(f"{where}: {info.name} keys differ from the shard's ("
                            f"{len(missing)} missing, e.g. {missing[:2]}; {len(extra)} extra, "
                            f"e.g. {extra[:2]}; or another order)")
            continue
        if read_all:
            problems += _check_samples(labels, path)
    return problems


def _check_samples(labels: LabelSet, path: Path) -> list[str]:
    problems = []
    try:
        for raw in iter_tar_samples(path):
            s, t = decode_label_sample(raw, len(labels.classes), labels.grid)
            if labels.topk is None:
                for layer, m in zip(LABEL_LAYERS, (s, t), strict=True):
                    sums = m.sum(axis=-1)
                    if not np.all(np.abs(sums - 1.0) < 0.01) or m.min() < 0:
                        problems.append(f"label sample {raw['__key__']!r} in {path}: {layer} "
                                        "is not a probability map (cells do not sum to 1)")
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
    return problems


def check_label_sets(root: str | Path, read_all: bool = True) -> list[str]:
    """The problems of every label set of ``root`` (:func:`check_label_set`); ``[]`` when
    it has none. What ``stexture inspect`` calls."""
    try:
        names = label_set_names(root)
    except (FileNotFoundError, ValueError):
        return []  # the shard folder's own check reports its manifest
    return [problem for name in names for problem in check_label_set(root, name,
                                                                      read_all=read_all)]


def iter_label_samples(labels: LabelSet, split: str) -> Iterator[tuple[str, np.ndarray,
                                                                      np.ndarray]]:
    """``(key, s, t)`` of every sample of ``split`` in sidecar order (dense float32 maps)."""
    for info in labels.manifest.shards(split):
        for raw in iter_tar_samples(labels.folder / info.name):
            yield (raw["__key__"],
                   *decode_label_sample(raw, len(labels.classes), labels.grid))
