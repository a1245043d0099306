"""``stexture inspect OUT``: validate a shard folder against its manifest, print a table of
samples per split and class, and write a contact sheet (image | structure | texture)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..shards import storage
from ..shards.format import DEFAULT_MAX_PIXELS, read_manifest
from ..shards.labels import check_label_sets
from ..shards.validate import Validation, contact_sheet, validate_dataset
from ._output import print_text
from ._storage_args import add_storage_arguments, storage_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=storage.location,
                        help="a folder written by `stexture decompose`: a local path or an "
                        "fsspec URL (s3://bucket/shards)")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="contact sheet PNG to write (default OUT/contact-sheet.png; for "
                        "a URL, contact-sheet.png in the current folder)")
    parser.add_argument("--per-class", type=int, default=3,
                        help="samples per class on the contact sheet (0: no sheet)")
    parser.add_argument("--recompute", type=int, default=2,
                        help="samples per split whose structure is computed again and compared")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="the most pixels a stored layer may declare; a larger one is a "
                        "problem, found from its header before decoding (what the manifest "
                        "records does not raise it)")
    parser.add_argument("--sources", action="store_true",
                        help="also re-read the sources and name shards whose sources changed "
                        "since they were written (a full scan)")
    add_storage_arguments(parser)


def _write_sheet(args: argparse.Namespace, result: Validation) -> str | None:
    """Write the contact sheet and say where; ``None`` after saying on stderr why a sheet
    that cannot be written (a read-only folder, a full disk) was skipped: the check it
    illustrates is done, and its outcome decides the exit code."""
    # a folder at a URL is not written to: its sheet goes to the current folder
    default = (Path("contact-sheet.png") if storage.is_url(str(args.out))
               else args.out / "contact-sheet.png")
    path = args.sheet or default
    try:
        return f"contact sheet: {contact_sheet(result.examples, path)}"
    except OSError as exc:
        print_text(f"stexture inspect: contact sheet skipped: cannot write {path} "
                   f"({exc.strerror or exc}); name another file with --sheet, or "
                   "--per-class 0 for none", sys.stderr)
        return None


def _label_set_problems(out: storage.Location) -> list[str]:
    """The problems of the folder's soft-label sidecars; at a URL they are not checked (the
    label sets are read from local folders only), which is said when there are any."""
    if not storage.is_url(str(out)):
        return check_label_sets(out)
    if read_manifest(out).raw.get("labels"):
        print_text(f"stexture inspect: the label sets of {out} are not checked (a folder at "
                   "a URL); copy it to a local folder to check them", sys.stderr)
    return []


def run(args: argparse.Namespace) -> int:
    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    with storage_session(args, [args.out]):
        return _inspect(args)


def _inspect(args: argparse.Namespace) -> int:
    result = validate_dataset(args.out, recompute=args.recompute,
                              examples_per_class=args.per_class, sources=args.sources,
                              max_pixels=args.max_pixels)
    if result.classes:  # the manifest was read (else the problems say why not)
        result.problems += _label_set_problems(args.out)  # soft-label sidecars, if any
    say = (lambda line: None) if args.quiet else print_text
    if result.counts:
        say(result.table())
    if result.recomputed:
        say(f"structure recomputed and matched on {result.recomputed} sample(s)"
            if result.ok else f"structure recomputed on {result.recomputed} sample(s)")
    if args.per_class > 0 and result.examples:
        line = _write_sheet(args, result)
        if line is not None:
            say(line)
    if result.problems:
        for problem in result.problems:
            print_text(f"stexture inspect: {problem}", sys.stderr)
        print_text(f"stexture inspect: {len(result.problems)} problem(s) in {args.out}",
                   sys.stderr)
        return 1
    print_text(f"{args.out}: consistent with its manifest")
    return 0
