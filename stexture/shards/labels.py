"""Soft-label sidecars: the ``s`` and ``t`` label maps of every sample, beside the shards.

The furniture report trained on ``y = k s + (1 - k) t``, with ``s`` a structure-biased and
``t`` a texture-biased model's label of the image. ``stexture label`` writes those labels
once (:mod:`stexture.training.soft_labels`); the loader pools and mixes them for each crop
(``make_loader(..., labels="soft", k=...)``). The shards are never rewritten: the labels go
into a *sidecar*, a second WebDataset shard set with the same keys.

Layout, for a sidecar called ``NAME`` of a shard folder ``ROOT``::

    ROOT/labels-NAME/manifest.json       what made the labels (below)
    ROOT/labels-NAME/train-000000.tar    one sidecar shard per shard, same name, same keys
    ROOT/labels-NAME/progress.json       while (or after) writing: what is done, resumable
    ROOT/labels-NAME/models/*.pt         cross-fitted teachers (trained by ``stexture label``)

Each sample of a sidecar shard holds, as NumPy ``.npy`` members (format 1.0, no pickles):

``s.npy``, ``t.npy``
    ``G x G x K`` float16: class probabilities on a ``G x G`` grid over the whole image
    (cell ``(i, j)`` covers rows ``[i H / G, (i + 1) H / G)`` and columns likewise), from
    the structure model on the structure layer (``s``) and the texture model on the texture
    layer (``t``). ``K = C`` (the class count; every row of a cell sums to 1 within fp16) or,
    for many classes, the ``K`` most probable classes of each cell, largest first.
``s.idx.npy``, ``t.idx.npy``
    only with top-k: ``G x G x K`` int16, the class index of each value.

webdataset, wids and Hugging Face ``datasets`` decode ``.npy`` members with their own
default handlers (``np.load``), so they read the labels as they are; join them to the
shards' samples by ``__key__``. :func:`decode_label_sample` is stexture's own reader.

``labels-NAME/manifest.json`` has the fields of a shard manifest (``classes``, ``splits``
with every sidecar shard's name, count and SHA-256, ``method`` ``"soft-labels"`` and
``params``), so :func:`~stexture.shards.format.read_manifest` reads and checks it, and
adds ``labels``: the grid, top-k, dtype, temperature, the teachers (how they were made and
the SHA-256 of their weights, one per fold), the folds and their rule, and ``source``: the
SHA-256 of every shard the labels were made from. The shard folder's own ``manifest.json``
names the sidecar under ``labels`` (``{NAME: {"folder", "sha256"}}``).

Pooling over a crop (:func:`pool_label_map`): for a crop box ``(top, left, h, w)`` of an
``H x W`` image, each cell is weighted by the area it shares with the box, the cells'
log-probabilities are averaged with those weights and a softmax makes the label (an
area-weighted geometric mean of the cells' distributions, normalised). A cell's
log-probabilities are the teacher's ``logits / T`` up to a constant, which the softmax
removes, so this pools the teacher's logits over the crop, as ReLabel pools its scores
before the softmax: for a model whose head is global average pooling and a linear layer,
that is the model's output on the average of the crop's cell features. It came closer to
the teacher applied to the crop itself than the arithmetic mean of the cells'
probabilities (total variation 0.085 against 0.149 on the synthetic furniture, README
"Choosing k"). A horizontal flip of the crop does not change the label: the flip moves
pixels inside the box, and the pooled label is a class distribution with no position in it
(the box is taken before the flip).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .format import (
    MANIFEST_NAME,
    Manifest,
    check_member_file_name,
    iter_tar_samples,
    read_manifest,
    split_member_name,
    tar_member_offsets,
)
from .storage import sha256_of

__all__ = [
    "LABELS_FORMAT",
    "LABEL_LAYERS",
    "METHOD",
    "PROGRESS_NAME",
    "LabelSet",
    "SoftLabelReader",
    "check_label_set",
    "check_label_sets",
    "compress_probabilities",
    "decode_label_sample",
    "decode_npy",
    "encode_label_sample",
    "encode_npy",
    "label_folder",
    "label_set_names",
    "mix_soft_labels",
    "pool_label_map",
    "read_label_set",
    "register_label_set",
]

LABELS_FORMAT = "stexture-soft-labels"
LABELS_VERSION = 1
#: The sidecar manifest's ``method`` (it is read as a shard manifest).
METHOD = "soft-labels"
PROGRESS_NAME = "progress.json"
LABEL_LAYERS = ("s", "t")
_FOLDER_PREFIX = "labels-"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# probabilities are floored here before pooling in log space: below float16's smallest value
_FLOOR = 2.0 ** -24
# the largest label map a reader accepts: 512 x 512 cells of 4096 classes is no "small grid"
_MAX_VALUES = 1 << 28


def value_field(layer: str) -> str:
    """The member holding ``layer``'s probabilities: ``s.npy`` / ``t.npy``."""
    return f"{layer}.npy"


def index_field(layer: str) -> str:
    """The member holding ``layer``'s class indices under top-k: ``s.idx.npy``."""
    return f"{layer}.idx.npy"


def label_folder(root: str | Path, name: str) -> Path:
    """``ROOT/labels-NAME``; ``ValueError`` for a name that is not 1-64 of ``[A-Za-z0-9_-]``
    (it becomes a folder name)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a label set's name must be 1-64 letters, digits, '_' or '-', got "
                         f"{name!r}")
    return Path(root) / f"{_FOLDER_PREFIX}{name}"


# ---------------------------------------------------------------- members


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` bytes (format 1.0, C order, no pickle)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), version=(1, 0),
                              allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes, dtype: str, ndim: int = 3) -> np.ndarray:
    """A ``.npy`` member's array, checked before anything of its size is allocated: the
    header must declare ``dtype`` (little-endian), ``ndim`` dimensions, C order, at most
    2**28 values, and exactly as many bytes as follow it. ``ValueError`` otherwise."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, declared = read_header(stream, max_header_size=1024)
    except (ValueError, SyntaxError, OSError) as exc:
        raise ValueError(f"not a .npy array ({exc})") from None
    expected = np.dtype(dtype).newbyteorder("<")
    if declared != expected or fortran or len(shape) != ndim:
        raise ValueError(f"expected a C-order {ndim}-D {expected.name} ({expected.str}) array, "
                         f"the header says {declared.name} ({declared.str}) of shape {shape}"
                         f"{' (Fortran order)' if fortran else ''}")
    count = int(np.prod(shape, dtype=np.int64))
    if not 0 < count <= _MAX_VALUES:
        raise ValueError(f"the array declares {count} values, outside 1..{_MAX_VALUES}")
    if len(data) - stream.tell() != count * expected.itemsize:
        raise ValueError(f"{len(data) - stream.tell()} bytes of data for a {shape} array of "
                         f"{expected.str}")
    return np.frombuffer(data, expected, count, stream.tell()).reshape(shape)


def compress_probabilities(probabilities: np.ndarray, topk: int | None
                           ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(values, indices)`` to store for a ``G x G x C`` probability map: all classes as
    float16 (``indices`` None), or with ``topk`` the ``topk`` largest per cell, largest
    first, with their class indices as int16."""
    if topk is None or topk >= probabilities.shape[-1]:
        return probabilities.astype(np.float16), None
    order = np.argsort(-probabilities, axis=-1, kind="stable")[..., :topk]
    values = np.take_along_axis(probabilities, order, axis=-1)
    return values.astype(np.float16), order.astype(np.int16)


def encode_label_sample(key: str, s: np.ndarray, t: np.ndarray, topk: int | None
                        ) -> dict[str, Any]:
    """The sidecar sample of ``key`` from its ``G x G x C`` probability maps ``s``, ``t``."""
    sample: dict[str, Any] = {"__key__": key}
    for layer, probabilities in zip(LABEL_LAYERS, (s, t), strict=True):
        values, indices = compress_probabilities(probabilities, topk)
        sample[value_field(layer)] = encode_npy(values)
        if indices is not None:
            sample[index_field(layer)] = encode_npy(indices)
    return sample


def _dense(values: np.ndarray, indices: np.ndarray | None, num_classes: int) -> np.ndarray:
    """``G x G x C`` float32 probabilities of stored values: as they are, or a top-k cell
    with the mass it left out shared equally by the other classes (so that every class has
    a probability, and a log)."""
    if indices is None:
        if values.shape[-1] != num_classes:
            raise ValueError(f"{values.shape[-1]} classes stored, the label set has "
                             f"{num_classes}")
        return values.astype(np.float32)
    if indices.shape != values.shape:
        raise ValueError(f"values {values.shape} and class indices {indices.shape} differ")
    if indices.size and not 0 <= int(indices.min()) <= int(indices.max()) < num_classes:
        raise ValueError(f"class indices outside 0..{num_classes - 1}")
    kept = values.astype(np.float32)
    others = max(num_classes - kept.shape[-1], 1)
    rest = np.clip(1.0 - kept.sum(axis=-1, keepdims=True), 0.0, None) / others
    dense = np.broadcast_to(rest, (*values.shape[:-1], num_classes)).copy()
    np.put_along_axis(dense, indices.astype(np.int64), kept, axis=-1)
    return dense


def decode_label_sample(raw: dict[str, Any], num_classes: int, grid: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` of a raw sidecar sample (bytes per field), each ``G x G x C`` float32
    (classes outside a top-k cell share its remaining mass). ``ValueError`` naming the key
    for a missing or
    malformed member, or a grid or class count other than the label set's."""
    key = raw.get("__key__", "<no key>")
    maps = []
    for layer in LABEL_LAYERS:
        if value_field(layer) not in raw:
            raise ValueError(f"label sample {key!r} lacks {value_field(layer)}")
        try:
            values = decode_npy(raw[value_field(layer)], "float16")
            indices = (decode_npy(raw[index_field(layer)], "int16")
                       if index_field(layer) in raw else None)
            if values.shape[:2] != (grid, grid):
                raise ValueError(f"a {values.shape[0]}x{values.shape[1]} grid, the label set "
                                 f"has {grid}x{grid}")
            maps.append(_dense(values, indices, num_classes))
        except ValueError as exc:
            raise ValueError(f"label sample {key!r}, {layer}: {exc}") from None
    return maps[0], maps[1]


# ---------------------------------------------------------------- pooling and mixing


def _cell_weights(start: int, length: int, extent: int, grid: int) -> np.ndarray:
    """The length of ``[start, start + length)`` inside each of ``grid`` equal cells of
    ``[0, extent)``."""
    edges = np.arange(grid + 1, dtype=np.float64) * (extent / grid)
    low = np.maximum(edges[:-1], start)
    high = np.minimum(edges[1:], start + length)
    return np.clip(high - low, 0.0, None)


def pool_label_map(label_map: np.ndarray, box: tuple[int, int, int, int],
                   shape: Sequence[int]) -> np.ndarray:
    """The class distribution of a crop: the ``G x G x C`` ``label_map`` of an image of
    ``shape`` (height, width, ...) pooled over ``box`` (top, left, h, w): the mean of the
    cells' log-probabilities, each cell weighted by the area it shares with the box, then a
    softmax (see the module docstring for why). Probabilities are floored at 2**-24 (under
    float16's smallest) before the log."""
    height, width = int(shape[0]), int(shape[1])
    top, left, h, w = box
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"crop box {box} is not inside a {height}x{width} image")
    grid = label_map.shape[0]
    rows = _cell_weights(top, h, height, grid)
    cols = _cell_weights(left, w, width, grid)
    total = rows.sum() * cols.sum()
    if not total > 0:
        raise ValueError("the crop covers no cell of the label map")
    logs = np.log(np.maximum(label_map.astype(np.float64), _FLOOR))
    pooled = np.einsum("i,j,ijc->c", rows, cols, logs) / total
    pooled = np.exp(pooled - pooled.max())
    return (pooled / pooled.sum()).astype(np.float32)


def mix_soft_labels(s: np.ndarray | Any, t: np.ndarray | Any, structure_index: Any,
                    texture_index: Any, k: float, label_smoothing: float = 0.0) -> Any:
    """``y = k * s[structure_index] + (1 - k) * t[texture_index]``, then label smoothing
    ``(1 - eps) * y + eps / C`` (torch tensors or arrays, ``B x C`` each).

    For an original row the two indices are the same sample; for a cue-conflict composite
    (structure of ``a``, texture of ``b``) ``s`` is the structure model's label of ``a``'s
    crop and ``t`` the texture model's label of ``b``'s crop: the model that reads the
    structure speaks for the structure, the one that reads the texture for the texture.
    """
    y = k * s[structure_index] + (1.0 - k) * t[texture_index]
    if label_smoothing:
        y = (1.0 - label_smoothing) * y + label_smoothing / y.shape[-1]
    return y


# ---------------------------------------------------------------- the label set


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


# ---------------------------------------------------------------- reading for the loader


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


# ---------------------------------------------------------------- checking (inspect)


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
