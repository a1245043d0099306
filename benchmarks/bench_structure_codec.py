"""Lossless encodings of the structure layer: bytes, encoding time and decoding time.

The structure layer is stored losslessly beside the JPEG image, and the loader decodes one
for every cue-conflict sample, so its decoding time bounds the loader's throughput while its
encoding time adds to the offline pipeline and its size to the shards. This measures the
candidates on real structure layers: RTV (default parameters) of 256 px crops of
scikit-image's photos and of the synthetic furniture images, each decomposed from its stored
JPEG (quality 95) and rounded to 8 bits, as the writer does. Decoding is timed the way the
loader decodes (OpenCV for images, :func:`stexture.shards.format.decode_structure` for the
chosen encoding); every lossless candidate is checked to round-trip exactly, and every
quantised one (``encode_structure(step=k)``, issue 23) to stay within its bound ``k // 2``;
"PSNR dB" is the decoded layer's against the 8-bit layer (inf: lossless).

Run from the repository root::

    python benchmarks/bench_structure_codec.py             # 12 photos + 12 furniture images
    python benchmarks/bench_structure_codec.py --count 4   # quicker
"""

from __future__ import annotations

import argparse
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
from bench_loader import photo_crops
from PIL import Image

from stexture import decompose, make_furniture_dataset
from stexture.shards.format import (
    decode_rgb,
    decode_structure,
    encode_image,
    encode_legacy_structure,
    encode_structure,
)

Codec = tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]


def furniture_images(count: int, size: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        make_furniture_dataset(tmp, per_class=max(1, -(-count // 8)), test_per_class=0,
                               shifted_per_class=0, size=size, progress=False)
        paths = sorted(Path(tmp).rglob("*.jpg"))
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths[:count]]


def structures_of(images: list[np.ndarray]) -> tuple[list[np.ndarray], list[bytes]]:
    """(8-bit RTV structure, stored JPEG) of each image, as the writer makes them."""
    stored = [encode_image(image, "jpg", 95) for image in images]
    layers = []
    for jpeg in stored:
        structure, _ = decompose(decode_rgb(jpeg), method="rtv")
        layers.append(np.clip(np.rint(structure * 255.0), 0, 255).astype(np.uint8))
    return layers, stored


def opencv_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


def png_codec(level: int, png_filter: int | None) -> Codec:
    params = [cv2.IMWRITE_PNG_COMPRESSION, level]
    if png_filter is not None:
        params += [cv2.IMWRITE_PNG_FILTER, png_filter]

    def encode(layer: np.ndarray) -> bytes:
        return cv2.imencode(".png", cv2.cvtColor(layer, cv2.COLOR_RGB2BGR), params)[1].tobytes()
    return encode, opencv_decode


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


def zstd_bytes(level: int) -> Callable[[bytes], bytes]:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress


def candidates() -> dict[str, Codec]:
    unzstd = zstandard.ZstdDecompressor().decompress
    codecs: dict[str, Codec] = {"WebP lossless method 0 (format version 1)": (
        encode_legacy_structure, opencv_decode)}
    for level in (1, 3):
        codecs[f"PNG level {level} (OpenCV's default filter)"] = png_codec(level, None)
        codecs[f"PNG level {level}, Paeth filter"] = png_codec(level, cv2.IMWRITE_PNG_FILTER_PAETH)
    for level in (1, 3, 6, 9):
        label = f"vertical delta + zstd {level}" + (" (chosen)" if level == 6 else "")
        codecs[label] = (lambda layer, level=level: encode_structure(layer, level),
                         decode_structure)
    for level in (3, 6):
        codecs[f"horizontal delta + zstd {level}"] = delta_codec(1, zstd_bytes(level), unzstd)
    codecs["vertical delta + zlib 1"] = delta_codec(
        0, lambda data: zlib.compress(data, 1), zlib.decompress)
    codecs["gradient predictor + zstd 6"] = gradient_codec(6)
    for step in QUANTISATION_STEPS:
        codecs[f"step {step} (error <= {step // 2}) + vertical delta + zstd 6"] = (
            lambda layer, step=step: encode_structure(layer, step=step), decode_structure)
    return codecs


#: quantisation steps measured (``encode_structure(step=k)``: error at most ``k // 2``)
QUANTISATION_STEPS = (2, 3, 4, 5)


def best_ms(fn: Callable[[object], object], items: list, repeats: int) -> float:
    """Per-item milliseconds, the best of ``repeats`` passes over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return 1e3 * best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12, help="images of each kind")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    sets = {
        "photos": structures_of(photo_crops(args.count, args.size, np.random.default_rng(0))),
        "furniture": structures_of(furniture_images(args.count, args.size)),
    }
    jpeg_ms = {name: best_ms(opencv_decode, stored, args.repeats)
               for name, (_, stored) in sets.items()}
    for name, (layers, stored) in sets.items():
        print(f"{name}: {len(layers)} RTV structures of {args.size} px; stored JPEG q95 "
              f"{np.mean([len(s) for s in stored]) / 1024:.1f} KiB, decodes in "
              f"{jpeg_ms[name]:.2f} ms")
    rows = []
    for label, (encode, decode) in candidates().items():
        row: list[object] = [label]
        for layers, stored in sets.values():
            encoded = [encode(layer) for layer in layers]
            errors = [np.abs(decode(data).astype(np.int16) - layer)
                      for layer, data in zip(layers, encoded, strict=True)]
            bound = int(label.split("<= ")[1][0]) if "error <=" in label else 0
            if max(int(error.max()) for error in errors) > bound:
                raise AssertionError(f"{label} is off by more than {bound}")
            size = np.mean([len(data) for data in encoded])
            mse = np.mean([np.mean(error.astype(np.float64) ** 2) for error in errors])
            row += [size / 1024, size / np.mean([len(s) for s in stored]),
                    best_ms(encode, layers, args.repeats), best_ms(decode, encoded, args.repeats),
                    10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")]
        rows.append(row)
    print(machine_line())
    print_table(["encoding", *(f"{name} {column}" for name in sets
                               for column in ("KiB", "x JPEG", "encode ms", "decode ms",
                                              "PSNR dB"))],
                rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
