"""End-to-end speed of `stexture decompose` against decomposition alone, and shard bytes.

    .venv/bin/python benchmarks/bench_pipeline.py [--images 64] [--workers 2] [--method rtv]
        [--engine local,ray]

Input: crops of scikit-image's photos (random position and flip, 320x400 and 400x320, or
smaller where the photo is), written as JPEG quality 90 into four class folders in a
temporary directory.

0. Stage costs: CPU time per image of every stage, in one process with one Numba thread;
   the per-image overhead is the share that is not decomposition (CPU time does not depend
   on what else runs on the machine; the wall times below do).
1. Decomposition alone: the same images, decoded, resized and JPEG round-tripped exactly as
   the pipeline does (not timed), then decomposed one call per image as the pipeline does
   on the CPU, in this one process with all cores' Numba threads (timed, after a warm-up).
2. The pipeline: `write_dataset` with ``--workers`` processes, timed from start to the
   manifest (process start-up, scanning, decoding, encoding, tar writing included). With
   ``--engine local,ray`` also `write_dataset_ray` on a local Ray of ``--workers`` CPUs, one
   task per core: first on fresh Ray workers (their imports and Numba cache loads included,
   as the local pool's are), then again with ``--overwrite`` on the warm workers. Ray's own
   start (``ray.init``) is timed apart: a cluster is started once for many runs. All engines
   must write the same bytes (checked). The ratio of images/s shows Ray's overhead on the
   same cores.

overhead = 1 - (decomposition alone) / (pipeline wall time): the share of the wall time
spent on everything but the decomposition. "in-pipeline overhead" replaces the first term by
the decomposition time the workers measured themselves (summed, divided by the workers),
which does not depend on how well one process uses all cores. Then bytes per sample (image,
structure, whole tar) and other lossless structure encodings on the same structure layers.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_line, print_table  # noqa: E402

from stexture import decompose  # noqa: E402
from stexture.imageio import read_rgb  # noqa: E402
from stexture.shards.format import (  # noqa: E402
    STRUCTURE_FIELD,
    decode_rgb,
    decode_structure,
    encode_image,
    encode_sample,
    encode_structure,
    iter_tar_samples,
    read_manifest,
    write_tar,
)
from stexture.shards.local import write_dataset  # noqa: E402
from stexture.shards.plan import ShardSettings, pixel_digest  # noqa: E402
from stexture.shards.ray_engine import write_dataset_ray  # noqa: E402
from stexture.shards.write import resize_shorter_side  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def make_inputs(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        photo = getattr(data, name)()[:, :, :3]
        h, w = (320, 400) if i % 3 else (400, 320)
        h, w = min(h, photo.shape[0]), min(w, photo.shape[1])
        y = rng.integers(0, photo.shape[0] - h + 1)
        x = rng.integers(0, photo.shape[1] - w + 1)
        crop = photo[y:y + h, x:x + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = root / name / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=90)
        paths.append(path)
    return paths


def decomposition_alone(paths: list[Path], settings: ShardSettings) -> float:
    images = [decode_rgb(encode_image(resize_shorter_side(read_rgb(p), settings.size),
                                      settings.image_format, settings.quality))
              for p in paths]
    decompose(images[0], method=settings.method, **settings.params)  # compile / load cache
    start = time.perf_counter()
    for image in images:
        decompose(image, method=settings.method, **settings.params)
    return time.perf_counter() - start


def stage_costs(paths: list[Path], settings: ShardSettings) -> dict[str, float]:
    """CPU milliseconds per image of each stage, one process, one Numba thread (does not
    depend on what else runs on the machine, unlike wall times)."""
    numba.set_num_threads(1)
    costs = dict.fromkeys(["scan: decode + hash", "read, decode, resize, encode, re-decode",
                           "decomposition", "structure: quantize + encode", "tar + sha256"], 0.0)
    names = list(costs)
    clock = time.process_time
    for path in paths:
        start = clock()
        pixel_digest(read_rgb(path))
        costs[names[0]] += clock() - start
        start = clock()
        stored = encode_image(resize_shorter_side(read_rgb(path), settings.size),
                              settings.image_format, settings.quality)
        image = decode_rgb(stored)
        costs[names[1]] += clock() - start
        start = clock()
        structure, _ = decompose(image, method=settings.method, **settings.params)
        costs[names[2]] += clock() - start
        start = clock()
        quantized = np.clip(np.rint(structure * 255.0), 0, 255).astype(np.uint8)
        sample = encode_sample("key", stored, settings.image_format, quantized, 0, {})
        costs[names[3]] += clock() - start
        start = clock()
        buffer = io.BytesIO()
        write_tar(buffer, [sample])
        hashlib.sha256(buffer.getvalue()).hexdigest()
        costs[names[4]] += clock() - start
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return {name: 1e3 * total / len(paths) for name, total in costs.items()}


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def time_engines(engines: list[str], src: Path, tmp: Path, settings: ShardSettings,
                 workers: int) -> tuple[list[tuple[str, float, float]], Path]:
    """(label, wall seconds, decomposition seconds summed over workers) per engine run, and
    the output folder of the first run; every run must write the same bytes."""
    quiet = {"show_progress": False, "log": lambda line: None}
    runs, digests = [], set()
    for engine in engines:
        out = tmp / f"out-{engine}"
        if engine == "local":
            calls = [("local", lambda out=out: write_dataset(src, out, settings, workers=workers,
                                                               **quiet))]
        elif engine == "ray":
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
            print(f"ray.init (local Ray, {workers} CPUs): {time.perf_counter() - start:.1f} s")
            calls = [(label, lambda out=out, again=again: write_dataset_ray(
                src, out, settings, overwrite=again, **quiet))
                for label, again in (("ray, fresh workers", False), ("ray, warm workers", True))]
        else:
            raise SystemExit(f"unknown engine {engine!r}; expected local or ray")
        for label, call in calls:
            start = time.perf_counter()
            summary = call()
            runs.append((label, time.perf_counter() - start, summary.decompose_seconds))
            digests.add(tree_digest(out))
    if len(digests) != 1:
        raise SystemExit("the engines wrote different bytes")
    return runs, tmp / f"out-{engines[0]}"


def encoded_size(pixels: np.ndarray, fmt: str, **options) -> tuple[int, float]:
    buffer = io.BytesIO()
    start = time.process_time()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return len(buffer.getvalue()), time.process_time() - start


def encoded_structure_seconds(pixels: np.ndarray) -> float:
    start = time.process_time()
    encode_structure(pixels)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", default="rtv")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--engine", default="local",
                        help="comma-separated engines to time: local, ray")
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        paths = make_inputs(src, args.images)
        shard_size = max(1, args.images // (4 * args.workers))
        settings = ShardSettings(method=args.method, size=args.size, shard_size=shard_size,
                                 val_fraction=0.0)
        alone = decomposition_alone(paths, settings)
        costs = stage_costs(paths, settings)
        total = sum(costs.values())
        print_table(["stage (one process, one thread)", "CPU ms / image", "share"],
                    [[name, ms, f"{100 * ms / total:.1f}%"] for name, ms in costs.items()])
        decomposition = costs["decomposition"]
        print(f"per-image overhead (CPU, all but decomposition): "
              f"{100 * (1 - decomposition / total):.1f}%\n")
        runs, out = time_engines(args.engine.split(","), src, Path(tmp), settings,
                                 args.workers)
        first_wall = runs[0][1]
        print_table(
            ["engine", "images", "workers", "method", "decompose alone (s)",
             "pipeline wall (s)", "pipeline img/s", "decompose-alone img/s", "overhead",
             "in-pipeline overhead", f"img/s / {runs[0][0]}"],
            [[label, args.images, args.workers, args.method, alone, wall, args.images / wall,
              args.images / alone, f"{100 * (1 - alone / wall):.1f}%",
              f"{100 * (1 - decomposing / args.workers / wall):.1f}%", first_wall / wall]
             for label, wall, decomposing in runs],
        )
        manifest = read_manifest(out)
        samples = [s for path in manifest.shard_paths("train") for s in iter_tar_samples(path)]
        image_bytes = np.mean([len(s["jpg"]) for s in samples])
        structure_bytes = np.mean([len(s[STRUCTURE_FIELD]) for s in samples])
        tar_bytes = sum(Path(p).stat().st_size for p in manifest.shard_paths("train"))
        per_sample = tar_bytes / len(samples)
        print()
        print_table(
            ["stored image (KiB)", "structure (KiB)", "tar per sample (KiB)",
             "sample / stored image"],
            [[image_bytes / 1024, structure_bytes / 1024, per_sample / 1024,
              per_sample / image_bytes]],
        )
        structures = [decode_structure(s[STRUCTURE_FIELD]) for s in samples]
        encodings = {
            "PNG level 6": ("PNG", {"compress_level": 6}),
            "PNG level 9": ("PNG", {"compress_level": 9}),
            "PNG level 1": ("PNG", {"compress_level": 1}),
            "WebP lossless method 0 (format version 1)": ("WEBP", {"lossless": True,
                                                                   "method": 0, "quality": 0}),
            "WebP lossless method 1": ("WEBP", {"lossless": True, "method": 1, "quality": 0}),
            "WebP lossless method 4": ("WEBP", {"lossless": True, "method": 4,
                                                "quality": 50}),
        }
        rows = [["vertical delta + Zstandard 6 (chosen)", structure_bytes / 1024,
                 structure_bytes / image_bytes,
                 1e3 * np.mean([encoded_structure_seconds(s) for s in structures])]]
        for label, (fmt, options) in encodings.items():
            sizes, seconds = zip(*(encoded_size(s, fmt, **options) for s in structures),
                                 strict=True)
            rows.append([label, np.mean(sizes) / 1024, np.mean(sizes) / image_bytes,
                         1e3 * np.mean(seconds)])
        print()
        print_table(["structure encoding (lossless)", "KiB", "x stored image",
                     "encode CPU ms"], rows)


if __name__ == "__main__":
    main()
