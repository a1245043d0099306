"""Hand-made shard directories for tests of the loader and the sweep.

The layers are simple and known: the image of class ``c`` is a flat colour (the class's
"structure") plus a class-specific stripe pattern (its "texture"); the structure layer stored
is the flat colour itself, so ``image - structure`` is exactly the stripes. No decomposition
method runs, which keeps these fixtures fast and independent of the smoothing code.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from stexture.shards.format import (
    INDEX_NAME,
    LEGACY_STRUCTURE_FIELD,
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_structure,
    encode_image,
    encode_legacy_structure,
    encode_sample,
    shard_name,
)

# Readers refuse a method this stexture does not know, so the manifest names one; the layers
# are not its output (no method runs here): check these folders with recompute=0.
FIXTURE_METHOD = "rtv"


def class_layers(cls: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, structure) uint8 ``size x size x 3`` for class ``cls``."""
    base = np.array([40 + (cls * 67) % 150, 40 + (cls * 113) % 150, 40 + (cls * 29) % 150])
    structure = np.broadcast_to(base + rng.integers(-10, 11, 3), (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    period = 2 + cls % 5
    stripes = np.where(((xx * (cls % 2) + yy * (1 - cls % 2)) // period) % 2 == 0, 30, -30)
    image = structure + stripes[:, :, None]
    return image.clip(0, 255).astype(np.uint8), structure.astype(np.uint8)


def as_format_version_1(sample: dict) -> dict:
    """The sample as format version 1 wrote it: the structure as ``structure.webp`` instead of
    ``structure.dzst``."""
    rest = {name: data for name, data in sample.items() if name != STRUCTURE_FIELD}
    structure = decode_structure(sample[STRUCTURE_FIELD])
    return {**rest, LEGACY_STRUCTURE_FIELD: encode_legacy_structure(structure)}


def make_shard_dir(
    root: Path,
    classes: tuple[str, ...] = ("armchair", "bed", "chair"),
    per_class: int = 6,
    val_per_class: int = 2,
    size: int = 32,
    shard_size: int = 4,
    seed: int = 0,
    format_version: int = 2,
) -> Path:
    """Write train/val shards, ``manifest.json`` and ``index.csv`` under ``root``
    (``format_version=1``: with the structure field of version 1, ``structure.webp``)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {"train": per_class, "val": val_per_class}
    manifest_splits: dict[str, dict] = {}
    index_rows = []
    for split, count in splits.items():
        samples = []
        for cls, name in enumerate(classes):
            for i in range(count):
                image, structure = class_layers(cls, size, rng)
                key = f"{name}_{split}_{i:04d}"
                record = {"source": f"{name}/{key}.png", "class_name": name,
                          "size": [size, size], "method": FIXTURE_METHOD, "params": {}}
                sample = encode_sample(key, encode_image(image, "png"), "png", structure, cls,
                                       record)
                samples.append(sample if format_version == 2 else as_format_version_1(sample))
        order = rng.permutation(len(samples))
        shards = []
        for start in range(0, len(samples), shard_size):
            name = shard_name(split, start // shard_size)
            chunk = [samples[j] for j in order[start:start + shard_size]]
            with wds.TarWriter(str(root / name)) as sink:
                for sample in chunk:
                    sink.write(sample)
                    index_rows.append((sample["__key__"], split, name, int(sample["cls"])))
            digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
            shards.append({"name": name, "count": len(chunk), "sha256": digest})
        manifest_splits[split] = {"count": len(samples), "shards": shards}
    manifest = {"format": "stexture-shards", "format_version": format_version,
                "classes": list(classes),
                "splits": manifest_splits, "method": FIXTURE_METHOD, "params": {}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    with open(root / INDEX_NAME, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "split", "shard", "cls"])
        writer.writerows(index_rows)
    return root
