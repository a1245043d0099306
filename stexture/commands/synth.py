"""``stexture synth OUT``: write the synthetic furniture dataset as an ImageFolder tree."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..datasets import CLASSES, make_furniture_dataset
from ..datasets.generate import MAX_SIZE
from ..datasets.scene import MIN_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="folder to write (must be empty or absent)")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="clean test images per class (default per-class // 4; 0 skips)")
    parser.add_argument("--shifted-per-class", type=int, default=None,
                        help="test_shifted images per class, made with texture correlation 0 "
                        "(default as --test-per-class; 0 skips)")
    parser.add_argument("--size", type=int, default=128,
                        help=f"image side in pixels ({MIN_SIZE}..{MAX_SIZE})")
    parser.add_argument("--texture-correlation", type=float, default=0.8,
                        help="probability that an object has its class's typical material")
    parser.add_argument("--classes", default=",".join(CLASSES),
                        help="comma-separated subset of the classes")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the splits of an earlier synth run in OUT (only what "
                        "its dataset.json names; anything else in a split folder is refused)")


def run(args: argparse.Namespace) -> int:
    classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    summary = make_furniture_dataset(
        args.out, classes=classes, per_class=args.per_class,
        test_per_class=args.test_per_class, shifted_per_class=args.shifted_per_class,
        size=args.size, texture_correlation=args.texture_correlation, seed=args.seed,
        overwrite=args.overwrite, progress=not args.quiet,
    )
    if summary.removed:
        print(f"removed the {summary.removed} images of the earlier synth run in {args.out} "
              "(named in its record; nothing else was touched)")
    rate = summary.total / max(summary.seconds, 1e-9)
    print(f"{summary.total} images of {len(classes)} classes, {args.size} px, in "
          f"{summary.seconds:.1f} s ({rate:.0f} images/s) -> {summary.root}")
    for split, count in summary.counts.items():
        print(f"  {split:13s} {count:6d} images, typical material in "
              f"{100 * summary.typical_share[split]:.0f}%")
    return 0
