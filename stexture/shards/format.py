"""The on-disk format of stexture shards: sample fields, layer encoding, manifest.

This module is the contract between the writer (``stexture.shards.writer``), the reader and
``inspect`` (``stexture.shards``), and the loader (``stexture.loader``).

A shard is a WebDataset tar file ``{split}-{index:06d}.tar``. Each sample holds:

``__key__``
    stable, dot-free key derived from the source's relative path.
``jpg`` or ``png``
    the stored image, 8-bit RGB, exactly as written (its decoded pixels are the image).
``structure.webp``
    the structure layer, 8-bit RGB, WebP lossless (decoded pixels are the structure: the
    method's float output rounded to 8 bits, so within 0.5/255 of it). Chosen by
    measurement over PNG: about 30% fewer bytes than PNG level 6 at a third of its encoding
    time, and faster to decode (numbers in the README).
``cls``
    the integer class index (ASCII decimal); classes are sorted names, see the manifest.
``json``
    a record: ``source``, ``class_name``, ``size`` ([height, width]), ``method``, ``params``.

The texture is defined on the decoded layers: ``texture = image - structure`` (int16, in
[-255, 255], or divided by 255 as float32).

Beside the shards, ``manifest.json`` lists classes, splits, counts, every shard with its
sample count and SHA-256, the method and its parameters, and the versions that wrote them;
``index.csv`` has one row per sample (``key,split,shard,cls``); ``rejected.jsonl`` one line
per rejected input with its reason.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_FIELDS",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "REJECTED_NAME",
    "STRUCTURE_FIELD",
    "DecodedSample",
    "Manifest",
    "ShardInfo",
    "decode_sample",
    "encode_image",
    "encode_sample",
    "encode_structure",
    "iter_tar_samples",
    "read_manifest",
    "shard_name",
    "texture_of",
    "write_tar",
]

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
REJECTED_NAME = "rejected.jsonl"
IMAGE_FIELDS = ("jpg", "png")
STRUCTURE_FIELD = "structure.webp"
FORMAT_NAME = "stexture-shards"
FORMAT_VERSION = 1


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``train-000000.tar``."""
    return f"{split}-{index:06d}.tar"


# WebP lossless at its fastest effort: ~5 ms for a 256x320 structure, as fast as PNG level 1
# and 30% smaller than PNG level 6; method 1 costs 3x the time for 3% fewer bytes, a visible
# share of a ~60 ms RTV decomposition (numbers: benchmarks/bench_pipeline.py).
_WEBP_METHOD = 0
_WEBP_QUALITY = 0
# fixed metadata of every tar member, so that the same samples give the same bytes
_TAR_MTIME = 0
_TAR_MODE = 0o444
# the order of a sample's fields in the tar (WebDataset groups consecutive members by key)
_FIELD_ORDER = ("jpg", "png", STRUCTURE_FIELD, "cls", "json")


def _encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode_structure(structure: np.ndarray) -> bytes:
    """Encode a uint8 ``HxWx3`` structure layer losslessly (WebP lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(structure).save(
        buffer, format="WEBP", lossless=True, method=_WEBP_METHOD, quality=_WEBP_QUALITY
    )
    return buffer.getvalue()


def encode_image(pixels: np.ndarray, image_format: str = "jpg", quality: int = 95) -> bytes:
    """Encode an 8-bit RGB image as the stored image (``"jpg"`` or lossless ``"png"``)."""
    if image_format == "jpg":
        return _encode_jpeg(pixels, quality)
    if image_format == "png":
        return _encode_png(pixels)
    raise ValueError(f"unknown image format {image_format!r}; expected one of {IMAGE_FIELDS}")


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode image bytes to an 8-bit RGB ``HxWx3`` array."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def encode_sample(
    key: str,
    image: bytes,
    image_format: str,
    structure: np.ndarray,
    cls: int,
    record: dict[str, Any],
) -> dict[str, Any]:
    """A WebDataset sample dict from an already encoded stored image and a uint8 structure."""
    if "." in key:
        raise ValueError(f"sample key {key!r} contains a dot")
    if image_format not in IMAGE_FIELDS:
        raise ValueError(f"unknown image format {image_format!r}; expected one of {IMAGE_FIELDS}")
    if structure.dtype != np.uint8 or structure.ndim != 3 or structure.shape[2] != 3:
        raise ValueError("structure layer must be uint8 HxWx3")
    return {
        "__key__": key,
        image_format: image,
        STRUCTURE_FIELD: encode_structure(structure),
        "cls": str(int(cls)).encode("ascii"),
        "json": json.dumps(record, sort_keys=True).encode("utf-8"),
    }


@dataclass(frozen=True)
class DecodedSample:
    """One decoded sample: uint8 ``HxWx3`` image and structure, class index, record."""

    key: str
    image: np.ndarray
    structure: np.ndarray
    cls: int
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def texture(self) -> np.ndarray:
        return texture_of(self.image, self.structure)


def texture_of(image: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """The texture layer ``image - structure`` of decoded uint8 layers, as int16."""
    return image.astype(np.int16) - structure.astype(np.int16)


def decode_sample(sample: dict[str, Any]) -> DecodedSample:
    """Decode a raw WebDataset sample (bytes per field) written by :func:`encode_sample`.

    Raises ``ValueError`` naming the key and the field when a field is missing or corrupt.
    """
    key = sample.get("__key__", "<no key>")
    image_field = next((f for f in IMAGE_FIELDS if f in sample), None)
    missing = [
        name
        for name, present in (
            ("jpg/png", image_field is not None),
            (STRUCTURE_FIELD, STRUCTURE_FIELD in sample),
            ("cls", "cls" in sample),
        )
        if not present
    ]
    if missing:
        raise ValueError(f"sample {key!r} lacks field(s) {', '.join(missing)}")
    try:
        image = decode_rgb(sample[image_field])
        structure = decode_rgb(sample[STRUCTURE_FIELD])
        cls = int(sample["cls"])
        record = json.loads(sample["json"]) if "json" in sample else {}
    except Exception as exc:
        raise ValueError(f"sample {key!r} cannot be decoded: {exc}") from exc
    if image.shape != structure.shape:
        raise ValueError(
            f"sample {key!r}: image {image.shape} and structure {structure.shape} differ in shape"
        )
    return DecodedSample(key, image, structure, cls, record)


def write_tar(fileobj: Any, samples: list[dict[str, Any]]) -> None:
    """Write ``samples`` (dicts of bytes, as from :func:`encode_sample`) as a tar to ``fileobj``.

    Member metadata is fixed (mtime 0, mode 0444, uid/gid 0, no user or group names) and the
    fields of a sample follow a fixed order, so equal samples give byte-identical tars.
    """
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            fields = [f for f in _FIELD_ORDER if f in sample]
            fields += sorted(f for f in sample if f not in _FIELD_ORDER and f != "__key__")
            for name in fields:
                payload = sample[name]
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(payload)
                info.mtime = _TAR_MTIME
                info.mode = _TAR_MODE
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))


def iter_tar_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    """The raw samples of a WebDataset tar in file order: dicts ``{"__key__", field: bytes}``.

    The key is the member name up to the first dot of its last path component, as in
    WebDataset. ``ValueError`` names the file when the tar itself is damaged.
    """
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, field_name = base.partition(".")
                if not dot:
                    continue
                key = f"{folder}/{stem}" if folder else stem
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                handle = tar.extractfile(member)
                current[field_name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: damaged tar file ({exc})") from exc
    if current is not None:
        yield current


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


def read_manifest(root: str | Path) -> Manifest:
    """Read ``root/manifest.json``; ``FileNotFoundError``/``ValueError`` that say what is wrong."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {root}: is it a directory written by `stexture decompose`?"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        splits = {
            split: [ShardInfo(s["name"], int(s["count"]), s["sha256"]) for s in entry["shards"]]
            for split, entry in raw["splits"].items()
        }
        return Manifest(root, list(raw["classes"]), splits, raw["method"], raw["params"], raw)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid stexture manifest: {exc!r}") from exc
