"""Encodings of the structure layer: bytes (alone and as a whole shard sample), encoding and
decoding time, error; and what a quantised layer does to the layers users train on.

The structure layer is stored beside the JPEG image, and the loader decodes one for every
cue-conflict sample, so its decoding time bounds the loader's throughput while its encoding
time adds to the offline pipeline and its size to the shards (issue 23's goal: a whole
sample at most 2.0x the stored photo). This measures the candidates on real structure
layers: RTV (default parameters), rounded to 8 bits as the writer does, of three sets of
stored images:

- *pipeline*: ``bench_pipeline.py``'s inputs (320x400 crops of scikit-image's photos, JPEG
  q90) through the writer's path (shorter side to 256 px, stored as JPEG q95): the set behind
  the 2.65x of issue 23, on which the goal is judged;
- *photos*: 256 px square crops of scikit-image's photos, downscaled (more detail per pixel);
- *furniture*: the synthetic furniture images.

"x photo" is the layer's bytes over the stored JPEG's; "sample x photo" a whole sample's
bytes in a tar (image, structure, ``cls``, the writer's ``json`` record, tar headers) over the
stored JPEG's. Decoding is timed the way the loader decodes (OpenCV for images,
:func:`stexture.shards.format.decode_structure` for ``structure.dzst``; a quantised layer of
another codec includes multiplying back by the step). Every lossless candidate is checked to
round-trip exactly and every quantised one to stay within its bound ``step // 2``; "PSNR dB"
is the decoded layer's against the 8-bit layer. Candidates from ``imagecodecs`` (JPEG-LS,
JPEG XL, WebP on the quantised layer) are measured when it is importable; it is not a
dependency of stexture.

The second table (``--errors``, on by default) is the effect of each step on what users train
on: the structure layer, the texture layer ``image - structure`` of the stored layers, and a
composite ``s_a + t_b`` of two images, each against the same from the lossless layer (max
error in levels, PSNR in dB; "texture SNR" is the lossless texture's energy over the error's).

``--loader STEPS`` times ``make_loader`` (``--loader-workers``, 96 px crops, batch 64,
p_conflict 0.5, as ``bench_loader.py``) on ``bench_loader.py``'s shards, their structure
replaced by RTV's of the stored image and stored at each step, beside its plain webdataset
pipeline (the photo only) on the first step's folder, all of them in each repeat (every
other repeat in reverse order), and prints samples/s relative to the first step's and the
plain one's in the same repeat (and, with 0 workers, the CPU time per sample).

Run from the repository root::

    .venv/bin/python benchmarks/bench_structure_codec.py             # 24 + 12 + 12 images
    .venv/bin/python benchmarks/bench_structure_codec.py --count 4   # quicker
    .venv/bin/python benchmarks/bench_structure_codec.py --loader 1,4 --no-codecs
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import zstandard
from _common import machine_line, print_table
from bench_loader import build_shards, epoch_samples, photo_crops, plain_loader
from bench_pipeline import make_inputs
from numba import njit
from PIL import Image

from stexture import decompose, make_furniture_dataset
from stexture.imageio import read_rgb
from stexture.loader import make_loader
from stexture.shards.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STRUCTURE_FIELD,
    decode_rgb,
    decode_structure,
    encode_image,
    encode_legacy_structure,
    encode_structure,
    iter_tar_samples,
    write_tar,
)
from stexture.shards.plan import ShardSettings
from stexture.shards.write import resize_shorter_side

try:  # optional: more codecs to compare against (not a dependency of stexture)
    import imagecodecs
except ImportError:
    imagecodecs = None

Codec = tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]
#: quantisation steps measured (``encode_structure(step=k)``: error at most ``k // 2``)
QUANTISATION_STEPS = (2, 3, 4, 5)
DEFAULT_STEP = ShardSettings.__dataclass_fields__["structure_step"].default


class Set:
    """Stored images of one kind: their JPEG bytes, decoded pixels, 8-bit RTV structures and
    the writer's record of each (for the tar's ``json`` member)."""

    def __init__(self, name: str, images: list[np.ndarray]) -> None:
        self.name = name
        self.stored = [encode_image(image, "jpg", 95) for image in images]
        self.images = [decode_rgb(jpeg) for jpeg in self.stored]
        self.layers = []
        for image in self.images:
            structure, _ = decompose(image, method="rtv")
            self.layers.append(np.clip(np.rint(structure * 255.0), 0, 255).astype(np.uint8))
        self.photo_bytes = float(np.mean([len(jpeg) for jpeg in self.stored]))

    def sample_bytes(self, structures: list[bytes]) -> float:
        """Mean bytes of a whole sample in a tar, with ``structures`` as its structure field."""
        samples = []
        for i, (jpeg, image, layer) in enumerate(
                zip(self.stored, self.images, structures, strict=True)):
            key = f"{self.name}_{i % 4}_img_{i:05d}_jpg"
            record = {"source": f"{self.name}/{i % 4}/img_{i:05d}.jpg", "class_name": "chair",
                      "cls": i % 4, "size": list(image.shape[:2]),
                      "source_size": [400, 320], "method": "rtv",
                      "params": ShardSettings().params}
            samples.append({"__key__": key, "jpg": jpeg, STRUCTURE_FIELD: layer,
                            "cls": str(i % 4).encode(),
                            "json": json.dumps(record, sort_keys=True).encode()})
        buffer = io.BytesIO()
        write_tar(buffer, samples)
        return len(buffer.getvalue()) / len(samples)


def pipeline_images(count: int) -> list[np.ndarray]:
    """``bench_pipeline.py``'s inputs, resized as the writer does (shorter side 256 px)."""
    with tempfile.TemporaryDirectory() as tmp:
        return [resize_shorter_side(read_rgb(path), 256) for path in make_inputs(Path(tmp), count)]


def furniture_images(count: int, size: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        make_furniture_dataset(tmp, per_class=max(1, -(-count // 8)), test_per_class=0,
                               shifted_per_class=0, size=size, progress=False)
        paths = sorted(Path(tmp).rglob("*.jpg"))
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths[:count]]


def opencv_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


def png_codec(level: int, png_filter: int | None) -> Codec:
    params = [cv2.IMWRITE_PNG_COMPRESSION, level]
    if png_filter is not None:
        params += [cv2.IMWRITE_PNG_FILTER, png_filter]

    def encode(layer: np.ndarray) -> bytes:
        return cv2.imencode(".png", cv2.cvtColor(layer, cv2.COLOR_RGB2BGR), params)[1].tobytes()
    return encode, opencv_decode


def quantise(layer: np.ndarray, step: int) -> np.ndarray:
    """``floor((s + step // 2) / step)``: the levels ``encode_structure(step=k)`` stores."""
    return ((layer.astype(np.uint16) + step // 2) // step).astype(np.uint8)


def dequantise(levels: np.ndarray, step: int) -> np.ndarray:
    return np.minimum(levels.astype(np.uint16) * step, 255).astype(np.uint8)


def delta_codec(axis: int, compress: Callable[[bytes], bytes],
                decompress: Callable[[bytes], bytes]) -> Codec:
    """A delta along ``axis`` (0: vertical, 1: horizontal), mod 256, then ``compress``; the
    inverse is a NumPy running sum (the shape is passed around out of band here)."""
    shapes: dict[int, tuple[int, ...]] = {}

    def encode(layer: np.ndarray) -> bytes:
        delta = layer.copy()
        if axis == 0:
            delta[1:] -= layer[:-1]
        else:
            delta[:, 1:] -= layer[:, :-1]
        data = compress(delta.tobytes())
        shapes[len(data)] = layer.shape
        return data

    def decode(data: bytes) -> np.ndarray:
        delta = np.frombuffer(decompress(data), np.uint8).reshape(shapes[len(data)])
        return np.cumsum(delta, axis=axis, dtype=np.uint8)
    return encode, decode


def gradient_codec(level: int) -> Codec:
    """The gradient predictor ``a + b - c`` (west + north - north-west, per channel, mod 256;
    the first row and column predict from their one neighbour), then Zstandard."""
    shapes: dict[int, tuple[int, ...]] = {}

    def encode(layer: np.ndarray) -> bytes:
        wide = layer.astype(np.int16)
        prediction = np.zeros_like(wide)
        prediction[0, 1:] = wide[0, :-1]
        prediction[1:, 0] = wide[:-1, 0]
        prediction[1:, 1:] = wide[1:, :-1] + wide[:-1, 1:] - wide[:-1, :-1]
        data = zstd_bytes(level)(((wide - prediction) & 255).astype(np.uint8).tobytes())
        shapes[len(data)] = layer.shape
        return data

    def decode(data: bytes) -> np.ndarray:
        residual = np.frombuffer(zstandard.ZstdDecompressor().decompress(data), np.uint8)
        residual = residual.reshape(shapes[len(data)])
        # a + b - c prediction of residual sums: the 2-D running sum of the residuals
        return np.cumsum(np.cumsum(residual, axis=0, dtype=np.uint8), axis=1, dtype=np.uint8)
    return encode, decode


@njit(cache=True)
def _from_bit_planes(planes: np.ndarray, count: int) -> np.ndarray:
    """Bytes from 8 bit planes (``np.packbits`` rows, most significant plane first), with a
    lookup table spreading each plane byte over 8 output bytes."""
    spread = np.zeros(256, np.uint64)
    for value in range(256):
        for bit in range(8):
            if value >> (7 - bit) & 1:
                spread[value] |= np.uint64(1) << np.uint64(8 * bit)
    words = np.zeros(planes.shape[1], np.uint64)
    for plane in range(8):
        shift = np.uint64(7 - plane)
        for j in range(planes.shape[1]):
            words[j] |= spread[planes[plane, j]] << shift
    return words.view(np.uint8)[:count]


def bit_plane_codec(step: int, level: int) -> Codec:
    """The quantised layer's vertical delta, zigzag-mapped (0, -1, 1, -2, ... to 0, 1, 2, 3,
    ...), split into 8 bit planes, then Zstandard: the planes put the few bits the small
    residuals use side by side, where Zstandard's entropy coder sees long zero runs. Not a
    stexture format; its decoder here is a Numba kernel plus NumPy."""
    shapes: dict[int, tuple[int, ...]] = {}

    def encode(layer: np.ndarray) -> bytes:
        levels = quantise(layer, step).reshape(layer.shape[0], -1).astype(np.int16)
        delta = levels.copy()
        delta[1:] -= levels[:-1]
        zigzag = np.where(delta >= 0, 2 * delta, -2 * delta - 1).astype(np.uint8)
        planes = np.packbits(np.unpackbits(zigzag.reshape(-1, 1), axis=1).T.copy(), axis=1)
        data = zstd_bytes(level)(planes.tobytes())
        shapes[len(data)] = layer.shape
        return data

    def decode(data: bytes) -> np.ndarray:
        shape = shapes[len(data)]
        count = int(np.prod(shape))
        planes = np.frombuffer(zstandard.ZstdDecompressor().decompress(data), np.uint8)
        zigzag = _from_bit_planes(planes.reshape(8, -1), count).astype(np.int16)
        delta = np.where(zigzag & 1, -(zigzag >> 1) - 1, zigzag >> 1).astype(np.uint8)
        levels = np.cumsum(delta.reshape(shape[0], -1), axis=0, dtype=np.uint8)
        return dequantise(levels, step).reshape(shape)
    return encode, decode


def zstd_bytes(level: int) -> Callable[[bytes], bytes]:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress


def imagecodecs_candidates() -> dict[str, Codec]:
    """JPEG-LS (lossless and near-lossless), lossless JPEG XL and lossless WebP, the last two
    also on the quantised levels (then multiplied back by the step when decoding)."""
    if imagecodecs is None:
        return {}
    ic = imagecodecs
    codecs: dict[str, Codec] = {
        "JPEG-LS lossless (imagecodecs)": (ic.jpegls_encode, ic.jpegls_decode),
        "JPEG XL lossless effort 1 (imagecodecs)": (
            lambda s: ic.jpegxl_encode(s, lossless=True, effort=1), ic.jpegxl_decode),
        "JPEG XL lossless effort 3 (imagecodecs)": (
            lambda s: ic.jpegxl_encode(s, lossless=True, effort=3), ic.jpegxl_decode),
        "WebP lossless method 4 (imagecodecs)": (
            lambda s: ic.webp_encode(s, lossless=True, method=4), ic.webp_decode),
        "JPEG-LS near-lossless NEAR=1 (error <= 1)": (
            lambda s: ic.jpegls_encode(s, level=1), ic.jpegls_decode),
    }
    for step in (3, 4):
        bound = f"error <= {step // 2}"
        codecs[f"step {step} ({bound}) + JPEG-LS lossless"] = (
            lambda s, k=step: ic.jpegls_encode(quantise(s, k)),
            lambda d, k=step: dequantise(ic.jpegls_decode(d), k))
        codecs[f"step {step} ({bound}) + WebP lossless method 0"] = (
            lambda s, k=step: ic.webp_encode(quantise(s, k), lossless=True, method=0, level=0),
            lambda d, k=step: dequantise(ic.webp_decode(d), k))
        codecs[f"step {step} ({bound}) + WebP lossless method 1"] = (
            lambda s, k=step: ic.webp_encode(quantise(s, k), lossless=True, method=1),
            lambda d, k=step: dequantise(ic.webp_decode(d), k))
        codecs[f"step {step} ({bound}) + JPEG XL lossless effort 3"] = (
            lambda s, k=step: ic.jpegxl_encode(quantise(s, k), lossless=True, effort=3),
            lambda d, k=step: dequantise(ic.jpegxl_decode(d), k))
    return codecs


def candidates() -> dict[str, Codec]:
    unzstd = zstandard.ZstdDecompressor().decompress
    codecs: dict[str, Codec] = {"WebP lossless method 0 (format version 1)": (
        encode_legacy_structure, opencv_decode)}
    codecs["PNG level 3, Paeth filter"] = png_codec(3, cv2.IMWRITE_PNG_FILTER_PAETH)
    for level in (6, 9, 12):
        label = f"vertical delta + zstd {level}" + (" (format version 2)" if level == 6 else "")
        codecs[label] = (lambda layer, level=level: encode_structure(layer, level),
                         decode_structure)
    codecs["horizontal delta + zstd 6"] = delta_codec(1, zstd_bytes(6), unzstd)
    codecs["vertical delta + zlib 1"] = delta_codec(
        0, lambda data: zlib.compress(data, 1), zlib.decompress)
    codecs["gradient predictor + zstd 6"] = gradient_codec(6)
    for step in QUANTISATION_STEPS:
        levels = (6, 9, 12) if step in (3, 4) else (6,)
        for level in levels:
            label = f"step {step} (error <= {step // 2}) + vertical delta + zstd {level}"
            if step == DEFAULT_STEP and level == 6:
                label += " (format version 3, default)"
            codecs[label] = (lambda layer, step=step, level=level: encode_structure(
                layer, level, step=step), decode_structure)
    for step in (3, 4):
        codecs[f"step {step} (error <= {step // 2}) + zigzag bit planes + zstd 6"] = (
            bit_plane_codec(step, 6))
    codecs.update(imagecodecs_candidates())
    return codecs


def best_ms(fn: Callable[[object], object], items: list, repeats: int) -> float:
    """Per-item milliseconds, the best of ``repeats`` passes over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return 1e3 * best


def psnr(error: np.ndarray) -> float:
    mse = float(np.mean(error.astype(np.float64) ** 2))
    return 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")


def error_bound(label: str) -> int:
    return int(label.split("error <= ")[1][0]) if "error <= " in label else 0


def codec_rows(sets: list[Set], repeats: int) -> list[list[object]]:
    rows = []
    for label, (encode, decode) in candidates().items():
        for case in sets:
            encoded = [encode(layer) for layer in case.layers]
            errors = [np.abs(decode(data).astype(np.int16) - layer)
                      for layer, data in zip(case.layers, encoded, strict=True)]
            worst = max(int(error.max()) for error in errors)
            if worst > error_bound(label):
                raise AssertionError(f"{label} is off by {worst} on {case.name}")
            size = float(np.mean([len(data) for data in encoded]))
            rows.append([label, case.name, size / 1024, size / case.photo_bytes,
                         case.sample_bytes(encoded) / case.photo_bytes,
                         best_ms(encode, case.layers, repeats),
                         best_ms(decode, encoded, repeats), worst,
                         psnr(np.concatenate([e.ravel() for e in errors]))])
    return rows


def error_rows(sets: list[Set]) -> list[list[object]]:
    """What each step does to the structure, the texture and a composite ``s_a + t_b``."""
    rows = []
    for step in QUANTISATION_STEPS:
        for case in sets:
            exact_s = [layer.astype(np.int16) for layer in case.layers]
            stored_s = [decode_structure(encode_structure(layer, step=step)).astype(np.int16)
                        for layer in case.layers]
            images = [image.astype(np.int16) for image in case.images]
            exact_t = [x - s for x, s in zip(images, exact_s, strict=True)]
            stored_t = [x - s for x, s in zip(images, stored_s, strict=True)]
            s_error = np.concatenate([(q - s).ravel() for q, s in zip(stored_s, exact_s,
                                                                      strict=True)])
            t_error = np.concatenate([(q - t).ravel() for q, t in zip(stored_t, exact_t,
                                                                      strict=True)])
            c_error = []
            for a in range(len(images)):  # s_a + t_b, b the next image of the same shape
                b = next((b for b in range(a + 1, a + len(images))
                          if images[b % len(images)].shape == images[a].shape), None)
                if b is not None:
                    b %= len(images)
                    c_error.append((stored_s[a] + stored_t[b] - exact_s[a] - exact_t[b]).ravel())
            composite = np.concatenate(c_error)
            energy = np.mean(np.concatenate([t.ravel() for t in exact_t]).astype(float) ** 2)
            rows.append([step, case.name, int(np.abs(s_error).max()), psnr(s_error),
                         int(np.abs(t_error).max()), psnr(t_error),
                         10 * np.log10(energy / np.mean(t_error.astype(float) ** 2)),
                         int(np.abs(composite).max()), psnr(composite)])
    return rows


def rtv_layers(source: Path) -> dict[str, np.ndarray]:
    """{key: 8-bit RTV structure of the stored image} of every sample of a shard folder."""
    layers = {}
    for path in sorted(source.glob("*.tar")):
        for sample in iter_tar_samples(path):
            structure, _ = decompose(decode_rgb(sample["jpg"]), method="rtv")
            layers[sample["__key__"]] = np.clip(np.rint(structure * 255.0), 0, 255).astype(
                np.uint8)
    return layers


def structure_copy(source: Path, out: Path, layers: dict[str, np.ndarray], step: int) -> Path:
    """``source``'s shard folder with each sample's structure replaced by ``layers[key]``
    stored at ``step``, and a manifest of format version 3 by RTV (``bench_loader``'s
    stands in a bilateral filter, which the readers do not take as a method)."""
    out.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.name == MANIFEST_NAME:
            manifest = {**json.loads(path.read_text()), "format": FORMAT_NAME,
                        "format_version": FORMAT_VERSION, "method": "rtv",
                        "params": ShardSettings().params}
            (out / path.name).write_text(json.dumps(manifest))
        elif path.suffix != ".tar":
            (out / path.name).write_bytes(path.read_bytes())
        else:
            samples = [{**sample, STRUCTURE_FIELD: encode_structure(
                layers[sample["__key__"]], step=step)} for sample in iter_tar_samples(path)]
            with open(out / path.name, "wb") as f:
                write_tar(f, samples)
    return out


def loader_rows(steps: list[int], samples: int, repeats: int, workers: list[int]
                ) -> list[list[object]]:
    """``make_loader`` on the same shards stored at each step (and the plain webdataset
    anchor), at each worker count, all of them in every repeat: samples/s (median), the
    median over repeats of the ratio to the first step's rate in the same repeat (paired:
    robust to the machine's load drifting between repeats), and with 0 workers the CPU time
    per sample of this one process (``time.process_time``: what the load changes least)."""
    with tempfile.TemporaryDirectory() as tmp:
        built = build_shards(Path(tmp) / "built", samples, 256, samples // 8, classes=8)
        layers = rtv_layers(built)
        roots = {step: structure_copy(built, Path(tmp) / f"step{step}", layers, step)
                 for step in steps}
        bytes_per = {step: sum(p.stat().st_size for p in root.glob("*.tar")) / samples
                     for step, root in roots.items()}
        variants = {"stexture (fused compose)": {},
                    "stexture, mix_device='cpu'": {"mix_device": "cpu"}}
        loaders = {}
        for w in workers:
            for step, root in roots.items():
                for name, options in variants.items():
                    loaders[(w, step, name)] = make_loader(
                        root, k=0.8, p_conflict=0.5, num_workers=w, batch_size=64,
                        image_size=96, **options)
            # the anchor: a plain webdataset pipeline decoding only the photo (no structure)
            loaders[(w, steps[0], "plain webdataset")] = plain_loader(roots[steps[0]], 64, 96, w)
        for loader in loaders.values():  # warm-up: imports, page cache
            epoch_samples(loader)
        rates: dict[tuple[int, int, str], list[float]] = {}
        cpu: dict[tuple[int, int, str], list[float]] = {}
        for repeat in range(repeats):
            # every other repeat in reverse order, so that a drift in the machine's load
            # falls on all loaders alike
            order = list(loaders.items())
            for key, loader in order[::-1] if repeat % 2 else order:
                start, start_cpu = time.perf_counter(), time.process_time()
                count = epoch_samples(loader)
                rates.setdefault(key, []).append(count / (time.perf_counter() - start))
                cpu.setdefault(key, []).append((time.process_time() - start_cpu) / count)
        rows = []
        for w, step, name in loaders:
            first = (w, steps[0], name)
            paired = [r / r0 for r, r0 in zip(rates[(w, step, name)], rates[first], strict=True)]
            plain = [r / r0 for r, r0 in zip(rates[(w, step, name)],
                                             rates[(w, steps[0], "plain webdataset")],
                                             strict=True)]
            cpu_us = 1e6 * statistics.median(cpu[(w, step, name)]) if w == 0 else "-"
            rows.append([w, step, name, bytes_per[step] / 1024,
                         round(statistics.median(rates[(w, step, name)])),
                         f"{statistics.median(paired):.3f}x", f"{statistics.median(plain):.2f}x",
                         cpu_us,
                         f"{min(paired):.2f}-{max(paired):.2f}"])
        return rows


def load_line() -> str:
    with open("/proc/loadavg") as f:
        return f"load average {' '.join(f.read().split()[:3])}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12,
                        help="images of each kind (twice as many of the pipeline's)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-codecs", action="store_true", help="skip the codec table")
    parser.add_argument("--no-errors", action="store_true", help="skip the error table")
    parser.add_argument("--loader", default="",
                        help="comma-separated steps to time the loader at (e.g. 1,4)")
    parser.add_argument("--loader-samples", type=int, default=1024)
    parser.add_argument("--loader-repeats", type=int, default=5)
    parser.add_argument("--loader-workers", default="0,2", help="comma-separated worker counts")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    print(f"{machine_line()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{load_line()}; imagecodecs {getattr(imagecodecs, '__version__', 'not installed')}")
    if not (args.no_codecs and args.no_errors):
        sets = [Set("pipeline", pipeline_images(2 * args.count)),
                Set("photos", photo_crops(args.count, args.size, np.random.default_rng(0))),
                Set("furniture", furniture_images(args.count, args.size))]
        for case in sets:
            print(f"{case.name}: {len(case.layers)} RTV structures, stored JPEG q95 "
                  f"{case.photo_bytes / 1024:.1f} KiB, decodes in "
                  f"{best_ms(opencv_decode, case.stored, args.repeats):.2f} ms")
        if not args.no_codecs:
            print_table(["encoding", "images", "KiB", "x photo", "sample x photo",
                         "encode ms", "decode ms", "max error", "PSNR dB"],
                        codec_rows(sets, args.repeats))
            print()
        if not args.no_errors:
            print_table(["step", "images", "structure max", "structure PSNR dB",
                         "texture max", "texture PSNR dB", "texture SNR dB", "composite max",
                         "composite PSNR dB"], error_rows(sets))
            print()
    if args.loader:
        steps = [int(step) for step in args.loader.split(",")]
        print(f"loader, before: {load_line()}")
        workers = [int(w) for w in args.loader_workers.split(",")]
        print_table(["workers", "step", "loader", "tar KiB / sample", "samples/s",
                     f"vs step {steps[0]} (paired median)", "vs plain (paired median)",
                     "CPU us / sample", f"vs step {steps[0]}, range over repeats"],
                    loader_rows(steps, args.loader_samples, args.loader_repeats, workers))
        print(f"loader, after: {load_line()}")
    print(f"end: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
