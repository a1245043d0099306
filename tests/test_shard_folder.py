"""One opened shard folder (issue 21): a sweep reads ``manifest.json`` and ``index.csv`` once,
and its subset, runs, loaders and report share what was read."""

from __future__ import annotations

import builtins
import csv
import os
from pathlib import Path

import pytest
from shardfactory import make_shard_dir

from stexture import make_loader
from stexture.shards import ShardFolder
from stexture.shards.format import INDEX_NAME, MANIFEST_NAME
from stexture.training.config import SweepConfig
from stexture.training.runner import stratified_subset, sweep


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("folder"), per_class=4, val_per_class=2,
                          size=16)


@pytest.fixture
def reads(monkeypatch):
    """How often each of the folder's own files is opened for reading."""
    counts = {MANIFEST_NAME: 0, INDEX_NAME: 0}
    real_open, real_read_text, real_os_open = builtins.open, Path.read_text, os.open

    def count(path) -> None:
        name = os.path.basename(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else ""
        if name in counts:
            counts[name] += 1

    def spy_open(file, *args, **kwargs):
        count(file)
        return real_open(file, *args, **kwargs)

    def spy_read_text(self, *args, **kwargs):
        count(self)
        return real_read_text(self, *args, **kwargs)

    def spy_os_open(file, *args, **kwargs):  # storage.open_read: checked before reading
        count(file)
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(Path, "read_text", spy_read_text)
    return counts


def test_keys_by_class_are_the_index_rows_of_the_split(shards):
    folder = ShardFolder.open(shards)
    with open(shards / INDEX_NAME, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for split in ("train", "val"):
        expected: dict[int, list[str]] = {}
        for row in rows:
            if row["split"] == split:
                expected.setdefault(int(row["cls"]), []).append(row["key"])
        assert folder.keys_by_class(split) == expected
    assert sum(map(len, folder.keys_by_class("train").values())) == folder.manifest.count(
        "train")


def test_a_folder_reads_its_files_once_and_resolved_keeps_them(shards, reads, monkeypatch):
    monkeypatch.chdir(shards.parent)
    folder = ShardFolder.open(shards.name)
    assert ShardFolder.open(folder) is folder
    folder.keys_by_class("train"), folder.keys_by_class("val"), folder.index
    moved = folder.resolved()
    assert moved.root == shards.resolve() and moved.root.is_absolute()
    assert moved.index == folder.index and moved.classes == folder.classes
    assert reads == {MANIFEST_NAME: 1, INDEX_NAME: 1}


def test_a_sweep_reads_the_manifest_and_the_index_once(shards, reads, tmp_path):
    def train_fn(train_loader, val_loaders, k, seed):
        next(iter(train_loader))
        for loader in val_loaders.values():
            next(iter(loader))
        return {"clean_acc": 0.5}

    config = SweepConfig(k_values=[0.0, 1.0], seeds=1, train_fraction=0.5,
                         balance_classes=True, image_size=16, batch_size=4)
    summary = sweep(shards, config, out=tmp_path / "runs", train_fn=train_fn, device="cpu",
                    log=None)
    assert len(summary["per_k"]) == 2
    assert reads == {MANIFEST_NAME: 1, INDEX_NAME: 1}


def test_loaders_and_the_subset_take_an_opened_folder_without_reading_again(shards, reads):
    folder = ShardFolder.open(shards)
    keys = stratified_subset(folder, 0.5)
    batch = next(iter(make_loader(folder, k=0.5, keys=keys, batch_size=2, image_size=16)))
    assert batch[0].shape == (2, 3, 16, 16)
    assert keys == stratified_subset(shards, 0.5)  # the path gives the same subset
    assert reads == {MANIFEST_NAME: 2, INDEX_NAME: 2}  # the second call opened the path
