"""Loader throughput: stexture's cue-conflict loader against a plain WebDataset pipeline.

Both read the same shards with the same random-resized crop, flip, batch size and worker
count. The shards are written in the current shard format (version 3) by the writer's own
steps: 256 px square crops of scikit-image's photos stored as JPEG q95, the stored JPEG
decoded again and decomposed by the default method (RTV, default parameters), its 8-bit
structure stored at the default quantisation step, the manifest with the format's fields
and the settings. The plain pipeline decodes only the stored image and yields normalised
images with integer labels (normalised by the same kernel as ours); ours also decodes the
structure layers a batch needs (half of them at ``p_conflict=0.5``), crops them with the
image, and composes cue-conflict batches with soft targets. ``mix_device="cpu"`` sends the
planned uint8 layers to the main process, which composes them there.

With workers, both pipelines keep them between epochs (``persistent_workers``: the
steady state a long epoch sees, without the worker start-up of 0.5-1 s that dominates a
short epoch on a busy machine). A timed run is ``--epochs`` epochs. Every repeat runs all
pipelines, every other repeat in reverse order, so that load on a shared machine falls on
all alike; the table gives the median samples/s and the median
(and range) over repeats of each pipeline's rate over the plain pipeline's in the same
repeat (paired ratios), and the CPU time per sample of the main process and its workers
(psutil) with the plain pipeline's over it: on a busy machine the rates swing with the
other jobs, the CPU time much less. ``--profile`` prints where the time of one sample goes instead:
the stages timed one by one on the built shards, and cProfile's top functions of an epoch
at 0 workers.

Run from the repository root::

    .venv/bin/python benchmarks/bench_loader.py               # 512 samples, 0 and 2 workers
    .venv/bin/python benchmarks/bench_loader.py --quick       # 256 samples, 3 repeats
    .venv/bin/python benchmarks/bench_loader.py --profile     # the per-stage breakdown
    .venv/bin/python benchmarks/bench_loader.py --folder /tmp/bl   # keep the shards for reruns
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch
import webdataset as wds
from _common import machine_line, median_seconds, print_table
from skimage import data

from stexture import decompose
from stexture.imageio import decode_jpeg_reduced, decode_jpeg_whole, jpeg_size
from stexture.loader import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_layers,
    make_loader,
    random_resized_crop_box,
)
from stexture.loader.batch import Normalize
from stexture.loader.train import crop_reduced, reduction_for, snap_box
from stexture.mixing import MixPlan, compose_normalized
from stexture.shards.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_rgb,
    decode_structure,
    encode_image,
    encode_sample,
    read_manifest,
    shard_name,
    write_tar,
)
from stexture.shards.plan import ShardSettings

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


def _structure(stored: bytes, settings: ShardSettings) -> np.ndarray:
    """The 8-bit structure of the decoded stored image, as the writer computes it."""
    structure, _ = decompose(decode_rgb(stored), method=settings.method,
                             device=settings.device, **settings.params)
    return np.clip(np.rint(structure * 255.0), 0, 255).astype(np.uint8)


def build_shards(root: Path, samples: int, size: int, shard_size: int, classes: int,
                 settings: ShardSettings | None = None) -> Path:
    """A training split of ``samples`` photo crops in the current shard format, as the
    writer makes it (:func:`stexture.shards.write.write_shard`'s steps: the stored JPEG
    decoded again and decomposed by ``settings.method``, the structure stored at
    ``settings.structure_step``), with a manifest the readers take and ``index.csv``.
    Returns ``root``."""
    import csv
    import hashlib

    settings = settings or ShardSettings()
    root.mkdir(parents=True, exist_ok=True)
    rows, shards = [], []
    images = photo_crops(samples, size, np.random.default_rng(0))
    for start in range(0, samples, shard_size):
        name = shard_name("train", start // shard_size)
        chunk = []
        for i in range(start, min(start + shard_size, samples)):
            key, cls = f"img{i:06d}", i % classes
            stored = encode_image(images[i], settings.image_format, settings.quality)
            record = {"source": key, "class_name": f"c{cls}", "cls": cls,
                      "size": [size, size], "method": settings.method,
                      "params": settings.params}
            chunk.append(encode_sample(key, stored, settings.image_format,
                                       _structure(stored, settings), cls, record,
                                       step=settings.structure_step))
            rows.append((key, "train", name, cls))
        buffer = io.BytesIO()
        write_tar(buffer, chunk)
        (root / name).write_bytes(buffer.getvalue())
        shards.append({"name": name, "count": len(chunk),
                       "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "classes": [f"c{c}" for c in range(classes)], "method": settings.method,
                "params": settings.params, "settings": settings.content(),
                "splits": {"train": {"count": samples, "shards": shards}}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with open(root / INDEX_NAME, "w", newline="") as f:
        csv.writer(f).writerows([("key", "split", "shard", "cls"), *rows])
    read_manifest(root)  # the readers take it
    return root


class PlainTransform:
    """Decode the stored JPEG only; the same crop and flip as the stexture loader.
    ``reduced``: the crop's box drawn from the JPEG's header and the JPEG decoded at the
    reduced DCT scale stexture's loader uses (what the plain pipeline would gain from it)."""

    def __init__(self, image_size: int, seed: int, reduced: bool = False) -> None:
        self.image_size = image_size
        self.rng = np.random.default_rng(seed)
        self.reduced = reduced

    def __call__(self, jpg: bytes) -> np.ndarray:
        if self.reduced:
            box = random_resized_crop_box(*jpeg_size(jpg), self.rng, 0.35)
            factor = reduction_for(box, self.image_size)
            box = snap_box(box, factor)
            image = decode_jpeg_reduced(jpg, factor, 10**8) if factor > 1 else decode_rgb(jpg)
            return crop_reduced(image, box, factor, self.image_size,
                                bool(self.rng.integers(2)), reduced=True)
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


def plain_loader(root: Path, batch_size: int, image_size: int, workers: int,
                 reduced: bool = False, **options) -> wds.WebLoader:
    urls = sorted(str(p) for p in root.glob("train-*.tar"))
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .shuffle(1000)
        .to_tuple("jpg", "cls")
        .map_tuple(PlainTransform(image_size, 0, reduced), int)
        .batched(batch_size, partial=True)
        .map(PlainNormalize())
    )
    return wds.WebLoader(dataset, batch_size=None, num_workers=workers,
                         persistent_workers=workers > 0, **options)


def epoch_samples(loader) -> int:
    return sum(len(batch[0]) for batch in loader)


def load_line() -> str:
    with open("/proc/loadavg") as f:
        return f"load average {' '.join(f.read().split()[:3])}"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else "unknown CPU"


class _Fixed(torch.utils.data.Dataset):
    """Batches made ahead: a loader over it times only the transfer to the main process."""

    def __init__(self, batch: torch.Tensor, count: int) -> None:
        self.batch, self.count = batch, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.batch


def transfer_ms(batch: torch.Tensor, workers: int, batches: int = 40) -> float:
    """Milliseconds per batch for ``workers`` processes to hand a ready ``batch`` to the
    main process (pickling through shared memory, receiving, touching every page)."""
    loader = torch.utils.data.DataLoader(_Fixed(batch, batches), batch_size=None,
                                         num_workers=workers)
    for _ in loader:  # warm-up: worker start
        pass
    start = time.perf_counter()
    for b in loader:
        b.sum()  # the trainer reads what arrives
    return 1e3 * (time.perf_counter() - start) / batches


def stage_costs(root: Path, batch_size: int, image_size: int, samples: int = 64
                ) -> list[list[object]]:
    """Milliseconds per sample of each stage of the training loader, timed one by one on
    the first ``samples`` samples (median of 3 passes), in this process."""
    from stexture.loader.index import SampleReader, locate_split
    from stexture.shards.format import read_manifest

    located = locate_split(read_manifest(root), "train", None)[:samples]
    reader = SampleReader()
    raws = [reader.raw(s) for s in located]
    images = [decode_rgb(r["jpg"]) for r in raws]
    rng = np.random.default_rng(0)
    boxes = [random_resized_crop_box(256, 256, rng, 0.35) for _ in located]
    pairs = list(zip(images, boxes, strict=True))
    # crops that take the 1/2 scale: at least 2 * image_size on each side, on its grid
    wide = [(im, snap_box((0, 0, 192 + 32 * (i % 3), 200 + 24 * (i % 3)), 2))
            for i, im in enumerate(images)]
    halves = [(decode_jpeg_reduced(r["jpg"], 2, 10**8), box)
              for r, (_, box) in zip(raws, wide, strict=True)]
    crops = [crop_layers((im,), b, image_size, True)[0] for im, b in pairs]
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    n = batch_size
    plan = MixPlan(torch.arange(n), torch.randperm(n), torch.rand(n) < 0.5)
    stacked = np.stack([crops[i % len(crops)] for i in range(n)])

    def per_sample(fn, items, count=None):
        return 1e3 * median_seconds(lambda: [fn(x) for x in items], repeats=3) / (
            count or len(items))

    rows = [
        ["read the sample's bytes (pread)", per_sample(reader.raw, located)],
        ["seed the sample's generator, draw box and flip", per_sample(
            lambda i: (lambda g: (random_resized_crop_box(256, 256, g, 0.35),
                                  g.integers(2)))(np.random.default_rng([0, 0, i])),
            range(len(located)))],
        ["decode the JPEG (decode_rgb)", per_sample(lambda r: decode_rgb(r["jpg"]), raws)],
        ["read the JPEG's header (jpeg_size)", per_sample(lambda r: jpeg_size(r["jpg"]), raws)],
        ["decode the JPEG whole, its header read (decode_jpeg_whole)", per_sample(
            lambda r: decode_jpeg_whole(r["jpg"], 10**8), raws)],
        ["decode the structure (decode_structure)", per_sample(
            lambda r: decode_structure(r[STRUCTURE_FIELD]), raws)],
        ["crop, resize, flip one layer (the loader's random boxes)", per_sample(
            lambda t: crop_layers((t[0],), t[1], image_size, True), pairs)],
        ["crop, resize, flip one layer (crop 192-256 px)", per_sample(
            lambda t: crop_layers((t[0],), t[1], image_size, True), wide)],
        ["decode the JPEG at 1/2 scale (decode_jpeg_reduced)", per_sample(
            lambda r: decode_jpeg_reduced(r["jpg"], 2, 10**8), raws)],
        ["crop the 1/2-scale image: resize, flip (crop 192-256 px)", per_sample(
            lambda t: crop_reduced(t[0], t[1], 2, image_size, True, reduced=True), halves)],
        ["crop a full layer via a 2x2 block mean: resize, flip (crop 192-256 px)", per_sample(
            lambda t: crop_reduced(t[0], t[1], 2, image_size, True), wide)],
        ["stack a batch's crops (per sample)", per_sample(
            lambda _: np.stack([crops[i % len(crops)] for i in range(n)]), [0], n)],
        ["compose + normalise, fused kernel (per sample)", per_sample(
            lambda _: compose_normalized(stacked, stacked, plan, scale=normalize.scale,
                                         shift=normalize.shift), [0], n)],
    ]
    float_batch = torch.zeros(n, 3, image_size, image_size)
    uint8_batch = torch.zeros(n, 3, image_size, image_size, dtype=torch.uint8)
    for w in (0, 2):
        for name, batch in (("float32", float_batch), ("uint8", uint8_batch)):
            rows.append([f"hand a ready {name} batch to the main process, {w} workers "
                         "(per sample)", transfer_ms(batch, w) / n])
    return [[name, f"{ms:.4f}"] for name, ms in rows]


def profile_epoch(root: Path, batch_size: int, image_size: int, top: int = 18, **options
                  ) -> str:
    """cProfile's ``top`` functions by own time over one epoch of ``make_loader`` at 0
    workers (after a warm-up epoch)."""
    loader = make_loader(root, k=0.8, p_conflict=0.5, batch_size=batch_size,
                         image_size=image_size, **options)
    epoch_samples(loader)
    profiler = cProfile.Profile()
    profiler.enable()
    epoch_samples(loader)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def pipelines(root: Path, args: argparse.Namespace, candidates: bool, workers_apply: bool
              ) -> dict:
    """name -> (workers -> loader) of the pipelines compared."""
    def ours(**options):
        return lambda w: make_loader(root, k=0.8, p_conflict=0.5, num_workers=w,
                                     batch_size=args.batch_size, image_size=args.image_size,
                                     persistent_workers=w > 0, **options)

    def full_decode(**options):
        def make(w):
            loader = ours(**options)(w)
            loader.dataset.reduced_decode = False  # the whole JPEG decoded, as before
            return loader
        return make

    made = {
        "plain webdataset": lambda w: plain_loader(root, args.batch_size, args.image_size, w),
        "stexture": ours(),
        "stexture, mix_device='cpu'": ours(mix_device="cpu"),
    }
    if candidates:
        made["stexture, full JPEG decode"] = full_decode()
        made["stexture, mix_device='cpu', full JPEG decode"] = full_decode(mix_device="cpu")
        made["plain webdataset, reduced DCT decode"] = lambda w: plain_loader(
            root, args.batch_size, args.image_size, w, reduced=True)
        if workers_apply:  # DataLoader options that apply only with workers
            made["stexture, prefetch_factor=4"] = ours(prefetch_factor=4)
            made["plain webdataset, prefetch_factor=4"] = lambda w: plain_loader(
                root, args.batch_size, args.image_size, w, prefetch_factor=4)
    return made


def measure(root: Path, args: argparse.Namespace, workers: list[int]) -> list[list[object]]:
    """The table rows: every pipeline at every worker count, all of them in each repeat
    (every other repeat in reverse order), rates and paired ratios to the plain one; a
    timed run is ``args.epochs`` epochs."""
    rows = []
    for w in workers:
        made = pipelines(root, args, args.candidates, w > 0)
        loaders = {name: make(w) for name, make in made.items()}
        for loader in loaders.values():  # warm-up: imports, page cache, Numba
            epoch_samples(loader)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        cpu: dict[str, list[float]] = {name: [] for name in loaders}
        for repeat in range(args.repeats):
            order = list(loaders.items())
            for name, loader in order[::-1] if repeat % 2 else order:
                start, start_cpu = time.perf_counter(), cpu_seconds()
                count = sum(epoch_samples(loader) for _ in range(args.epochs))
                rates[name].append(count / (time.perf_counter() - start))
                cpu[name].append((cpu_seconds() - start_cpu) / count)
        plain, plain_cpu = rates["plain webdataset"], cpu["plain webdataset"]
        for name, got in rates.items():
            ratios = [r / p for r, p in zip(got, plain, strict=True)]
            cpu_ratios = [p / c for c, p in zip(cpu[name], plain_cpu, strict=True)]
            rows.append([w, name, round(statistics.median(got)),
                         f"{statistics.median(ratios):.2f}x",
                         f"{min(ratios):.2f}-{max(ratios):.2f}",
                         f"{1e3 * statistics.median(cpu[name]):.2f}",
                         f"{statistics.median(cpu_ratios):.2f}x"])
    return rows


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (the workers): what
    the other jobs on a shared machine change least."""
    me = psutil.Process()
    times = [me.cpu_times()]
    for child in me.children(recursive=True):
        try:
            times.append(child.cpu_times())
        except psutil.NoSuchProcess:
            pass
    return sum(t.user + t.system for t in times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--size", type=int, default=256, help="stored image side (px)")
    parser.add_argument("--image-size", type=int, default=96, help="crop side (px)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    parser.add_argument("--candidates", action="store_true",
                        help="also the candidates measured for issue 23: the full JPEG "
                             "decode, the plain pipeline with the reduced one, prefetch_factor")
    parser.add_argument("--quick", action="store_true", help="256 samples, 3 repeats")
    parser.add_argument("--profile", action="store_true",
                        help="per-stage costs and a cProfile of an epoch instead of the table")
    parser.add_argument("--folder", type=Path,
                        help="build the shards here (reused when it holds a manifest)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats = 256, 3
    workers = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(f"{machine_line()} ({cpu_model()}, nproc {len(os.sched_getaffinity(0))})"
          f"; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder or Path(tmp) / "shards"
        if not (root / MANIFEST_NAME).exists():
            start = time.perf_counter()
            build_shards(root, args.samples, args.size, max(1, args.samples // 8), classes=8)
            print(f"built {args.samples} samples of {args.size} px in 8 shards "
                  f"({time.perf_counter() - start:.0f} s)")
        if args.profile:
            print_table(["stage", "ms per sample"],
                        stage_costs(root, args.batch_size, args.image_size))
            print(profile_epoch(root, args.batch_size, args.image_size))
            print(load_line())
            return 0
        rows = measure(root, args, workers)
        print(f"{load_line()} at the end")
        print_table(["workers", "pipeline", "samples/s", "vs plain (median)",
                     "vs plain (range)", "CPU ms/sample", "vs plain (CPU)"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
