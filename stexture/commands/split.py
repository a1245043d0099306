"""``stexture split IMAGE``: decompose one image file into structure and texture PNGs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..decompose import decompose
from ..imageio import read_rgb, texture_to_display, write_png
from ._params import add_method_arguments, parse_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the image file to decompose")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder for <stem>-structure.png and <stem>-texture.png")
    add_method_arguments(parser)


def run(args: argparse.Namespace) -> int:
    params = parse_params(args.method, args.param)
    image = read_rgb(args.image)
    start = time.perf_counter()
    structure, texture = decompose(image, method=args.method, device=args.device, **params)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.image.stem
    structure_path = args.out / f"{stem}-structure.png"
    texture_path = args.out / f"{stem}-texture.png"
    write_png(structure_path, structure)
    write_png(texture_path, texture_to_display(texture))
    height, width = image.shape[:2]
    if not args.quiet:
        print(f"{args.image}: {width}x{height} {args.method} in {seconds:.2f} s -> "
              f"{structure_path}, {texture_path}")
    return 0
