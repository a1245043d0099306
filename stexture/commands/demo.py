"""``stexture demo``: the whole product on built-in synthetic furniture, in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import demo_sizes, format_outcome, run_demo
from ._output import print_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default stexture-demo, stexture-demo-quick with "
                        "--quick); run again with the same options to resume")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and epochs (60 per class, 8 epochs)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="images per class (default 150, 60 with --quick)")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels, >= 32 (default 64)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="most epochs per run (default 10, 8 with --quick)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per k (default 1)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated subset of the classes (default all eight)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                        help="where to decompose and train (auto: the GPU when there is one)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print a line per epoch of every sweep run")


def run(args: argparse.Namespace) -> int:
    classes = None
    if args.classes is not None:
        classes = tuple(name.strip() for name in args.classes.split(",") if name.strip())
    sizes = demo_sizes(args.quick, per_class=args.per_class, size=args.size,
                       epochs=args.epochs, seeds=args.seeds, classes=classes)
    out = args.out or Path("stexture-demo-quick" if args.quick else "stexture-demo")
    result = run_demo(out, sizes=sizes, device=args.device, progress=not args.quiet,
                      log=None if args.quiet else print_line, verbose=args.verbose)
    print(format_outcome(result))
    return 0
