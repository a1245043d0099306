"""``stexture inspect OUT``: validate a shard folder against its manifest, print a table of
samples per split and class, and write a contact sheet (image | structure | texture)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..shards.labels import check_label_sets
from ..shards.validate import contact_sheet, validate_dataset
from ._output import print_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="a folder written by `stexture decompose`")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="contact sheet PNG to write (default OUT/contact-sheet.png)")
    parser.add_argument("--per-class", type=int, default=3,
                        help="samples per class on the contact sheet (0: no sheet)")
    parser.add_argument("--recompute", type=int, default=2,
                        help="samples per split whose structure is computed again and compared")
    parser.add_argument("--sources", action="store_true",
                        help="also re-read the sources and name shards whose sources changed "
                        "since they were written (a full scan)")


def run(args: argparse.Namespace) -> int:
    result = validate_dataset(args.out, recompute=args.recompute,
                              examples_per_class=args.per_class, sources=args.sources)
    result.problems += check_label_sets(args.out)  # soft-label sidecars, if any
    say = (lambda line: None) if args.quiet else print_text
    if result.counts:
        say(result.table())
    if result.recomputed:
        say(f"structure recomputed and matched on {result.recomputed} sample(s)"
            if result.ok else f"structure recomputed on {result.recomputed} sample(s)")
    if args.per_class > 0 and result.examples:
        sheet = contact_sheet(result.examples, args.sheet or args.out / "contact-sheet.png")
        say(f"contact sheet: {sheet}")
    if result.problems:
        for problem in result.problems:
            print_text(f"stexture inspect: {problem}", sys.stderr)
        print_text(f"stexture inspect: {len(result.problems)} problem(s) in {args.out}",
                   sys.stderr)
        return 1
    print_text(f"{args.out}: consistent with its manifest")
    return 0
