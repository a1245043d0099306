"""The loader's reader of a label set: the pooled ``(s, t)`` of a crop, read by offset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..format import (
    check_member_file_name,
    split_member_name,
    tar_member_offsets,
)
from .label_set import LabelSet
from .members import decode_label_sample
from .pool import pool_label_map


class SoftLabelReader:
    """The pooled ``(s, t)`` of a crop of each sample of a split, read by offset.

    Parameters
    ----------
    labels : LabelSet
    split : str
    keys : sequence of str
        The loader's samples in its order: item ``i`` is ``keys[i]``.

    ``ValueError`` when a key has no labels in the sidecar (named, with how many), or a
    sidecar shard disagrees with its manifest's count. Picklable: each process opens its
    own files.
    """

    def __init__(self, labels: LabelSet, split: str, keys: Sequence[str]) -> None:
        self.num_classes = len(labels.classes)
        self.grid = labels.grid
        located: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {}
        for info in labels.manifest.shards(split):
            path = labels.folder / check_member_file_name(info.name, str(labels.folder))
            if not path.is_file():
                raise FileNotFoundError(f"the label shard {path} is missing")
            shard = _member_table(path)
            if len(shard) != info.count:
                raise ValueError(f"label shard {path} holds {len(shard)} samples but its "
                                 f"manifest says {info.count}")
            located.update((key, (str(path), fields)) for key, fields in shard.items())
        absent = [key for key in keys if key not in located]
        if absent:
            raise ValueError(f"{len(absent)} sample(s) of split {split!r} have no soft labels "
                             f"in {labels.folder} (e.g. {absent[0]!r}): label the shards again")
        self.entries = [located[key] for key in keys]
        self.keys = list(keys)
        self._files: dict[str, Any] = {}
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_pid": -1}

    def maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(s, t)`` label maps of item ``index``, ``G x G x C`` float32."""
        if self._pid != os.getpid():  # a forked worker opens its own files
            self._files, self._pid = {}, os.getpid()
        path, fields = self.entries[index]
        file = self._files.get(path)
        if file is None:
            file = self._files[path] = open(path, "rb")  # noqa: SIM115
        raw: dict[str, Any] = {"__key__": self.keys[index]}
        for field, (offset, size) in fields.items():
            raw[field] = os.pread(file.fileno(), size, offset)
        return decode_label_sample(raw, self.num_classes, self.grid)

    def pooled(self, index: int, box: tuple[int, int, int, int], shape: Sequence[int]
               ) -> np.ndarray:
        """``2 x C`` float32: ``s`` and ``t`` of item ``index`` pooled over ``box``."""
        return np.stack([pool_label_map(m, box, shape) for m in self.maps(index)])


def _member_table(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """key -> {field: (offset, size)} of an uncompressed tar, headers only (the format's
    reader)."""
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for name, offset, size in tar_member_offsets(path):
        key, field = split_member_name(name)
        if field:
            table.setdefault(key, {})[field] = (offset, size)
    return table
