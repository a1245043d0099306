"""Loader throughput: stexture's cue-conflict loader against a plain WebDataset pipeline.

Both read the same shards (256 px photos as JPEG, structure layers as the format stores them)
with the same random-resized crop, flip, batch size and worker count. The plain pipeline
decodes only the stored image and yields normalised images with integer labels (normalised
by the same kernel as ours); ours also decodes the structure layer, crops it with the image,
and composes cue-conflict batches (``p_conflict=0.5``) with soft targets. A third row reads
the same samples with the structure stored as format version 1 did (``structure.webp``,
lossless WebP). Runs alternate between the pipelines so that load on a shared machine hits
all alike; the table gives the median samples/s per setting.

Run from the repository root::

    python benchmarks/bench_loader.py            # 0, 1 and 2 workers
    python benchmarks/bench_loader.py --quick    # fewer samples and repeats
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import webdataset as wds
from _common import machine_line, median_seconds, print_table
from skimage import data

from stexture.loader import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_layers,
    make_loader,
    random_resized_crop_box,
)
from stexture.loader.batch import Normalize
from stexture.mixing import MixPlan, compose_normalized
from stexture.shards.format import (
    INDEX_NAME,
    LEGACY_STRUCTURE_FIELD,
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_rgb,
    decode_structure,
    encode_image,
    encode_legacy_structure,
    encode_sample,
    iter_tar_samples,
    shard_name,
    write_tar,
)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "cat")


def photo_crops(count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random square crops of skimage's photos, resized to ``size``."""
    photos = [getattr(data, name)() for name in PHOTOS]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[top:top + side, left:left + side]
        crops.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return crops


def build_shards(root: Path, samples: int, size: int, shard_size: int, classes: int,
                 legacy: bool = False) -> Path:
    """Shards in the stexture format (``legacy``: with format version 1's WebP structure);
    the structure is a bilateral filter of the photo (a stand-in for a decomposition:
    edge-preserving, somewhat less smooth than RTV)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, shards = [], []
    images = photo_crops(samples, size, rng)
    for start in range(0, samples, shard_size):
        name = shard_name("train", start // shard_size)
        chunk = []
        for i in range(start, min(start + shard_size, samples)):
            structure = cv2.bilateralFilter(images[i], 9, 50, 7)
            key = f"img{i:06d}"
            sample = encode_sample(key, encode_image(images[i], "jpg", 95), "jpg", structure,
                                   i % classes, {"source": key})
            if legacy:
                del sample[STRUCTURE_FIELD]
                sample[LEGACY_STRUCTURE_FIELD] = encode_legacy_structure(structure)
            chunk.append(sample)
            rows.append((key, "train", name, i % classes))
        buffer = io.BytesIO()
        write_tar(buffer, chunk)
        (root / name).write_bytes(buffer.getvalue())
        shards.append({"name": name, "count": len(chunk),
                       "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})
    manifest = {"classes": [f"c{c}" for c in range(classes)], "method": "bilateral",
                "params": {}, "splits": {"train": {"count": samples, "shards": shards}}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with open(root / INDEX_NAME, "w", newline="") as f:
        csv.writer(f).writerows([("key", "split", "shard", "cls"), *rows])
    return root


class PlainTransform:
    """Decode the stored JPEG only; the same crop and flip as the stexture loader."""

    def __init__(self, image_size: int, seed: int) -> None:
        self.image_size = image_size
        self.rng = np.random.default_rng(seed)

    def __call__(self, jpg: bytes) -> np.ndarray:
        image = decode_rgb(jpg)
        box = random_resized_crop_box(*image.shape[:2], self.rng, 0.35)
        return crop_layers((image,), box, self.image_size, flip=bool(self.rng.integers(2)))[0]


class PlainNormalize:
    """uint8 NHWC batch -> normalised float NCHW, with the stexture loader's own kernel (every
    sample an original), so that normalising costs both pipelines the same."""

    def __init__(self) -> None:
        normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.scale, self.shift = normalize.scale, normalize.shift

    def __call__(self, batch: tuple) -> tuple:
        images, labels = batch
        n = len(images)
        originals = MixPlan(torch.arange(n), torch.arange(n), torch.zeros(n, dtype=torch.bool))
        x = compose_normalized(images, images, originals, scale=self.scale, shift=self.shift)
        return torch.from_numpy(x), torch.as_tensor(labels)


def plain_loader(root: Path, batch_size: int, image_size: int, workers: int) -> wds.WebLoader:
    urls = sorted(str(p) for p in root.glob("train-*.tar"))
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .shuffle(1000)
        .to_tuple("jpg", "cls")
        .map_tuple(PlainTransform(image_size, 0), int)
        .batched(batch_size, partial=True)
        .map(PlainNormalize())
    )
    return wds.WebLoader(dataset, batch_size=None, num_workers=workers)


def epoch_samples(loader) -> int:
    return sum(len(batch[0]) for batch in loader)


def decode_costs(root: Path, legacy_root: Path) -> dict[str, float]:
    """Milliseconds to decode one stored image and one structure layer (both encodings)."""
    sample = next(iter_tar_samples(root / shard_name("train", 0)))
    legacy = next(iter_tar_samples(legacy_root / shard_name("train", 0)))
    return {
        "jpg": 1e3 * median_seconds(lambda: decode_rgb(sample["jpg"]), repeats=50),
        STRUCTURE_FIELD: 1e3 * median_seconds(
            lambda: decode_structure(sample[STRUCTURE_FIELD]), repeats=50),
        LEGACY_STRUCTURE_FIELD: 1e3 * median_seconds(
            lambda: decode_rgb(legacy[LEGACY_STRUCTURE_FIELD]), repeats=50),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--size", type=int, default=256, help="stored image side (px)")
    parser.add_argument("--image-size", type=int, default=96, help="crop side (px)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="512 samples, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats = 512, 2
    workers = [int(w) for w in args.workers.split(",")]
    shard_size = args.samples // 8
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = build_shards(Path(tmp) / "dzst", args.samples, args.size, shard_size, classes=8)
        legacy_root = build_shards(Path(tmp) / "webp", args.samples, args.size, shard_size,
                                   classes=8, legacy=True)
        print(f"built {args.samples} samples of {args.size} px in 8 shards, twice "
              f"({time.perf_counter() - start:.0f} s)")
        costs = decode_costs(root, legacy_root)
        print("decode ms per sample: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
        pipelines = {
            "plain webdataset": lambda w: plain_loader(root, args.batch_size, args.image_size, w),
            "stexture": lambda w: make_loader(root, k=0.8, p_conflict=0.5, num_workers=w,
                                              batch_size=args.batch_size,
                                              image_size=args.image_size),
            "stexture, mixed in main": lambda w: make_loader(
                root, k=0.8, p_conflict=0.5, num_workers=w, batch_size=args.batch_size,
                image_size=args.image_size, mix_device="cpu"),
            f"stexture, {LEGACY_STRUCTURE_FIELD} shards": lambda w: make_loader(
                legacy_root, k=0.8, p_conflict=0.5, num_workers=w, batch_size=args.batch_size,
                image_size=args.image_size),
        }
        rates: dict[tuple[str, int], list[float]] = {}
        for w in workers:
            loaders = {name: make(w) for name, make in pipelines.items()}
            for loader in loaders.values():  # warm-up: imports, page cache
                epoch_samples(loader)
            for _ in range(args.repeats):
                for name, loader in loaders.items():
                    t0 = time.perf_counter()
                    n = epoch_samples(loader)
                    rates.setdefault((name, w), []).append(n / (time.perf_counter() - t0))
        rows = []
        for w in workers:
            plain = statistics.median(rates[("plain webdataset", w)])
            for name in pipelines:
                rate = statistics.median(rates[(name, w)])
                rows.append([w, name, round(rate), f"{rate / plain:.2f}x"])
        print(machine_line())
        print_table(["workers", "pipeline", "samples/s", "vs plain"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
