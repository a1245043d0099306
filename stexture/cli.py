"""The ``stexture`` command. Each subcommand is a module in :mod:`stexture.commands` with
``add_arguments(parser)`` and ``run(args) -> int``, listed with its help in :data:`COMMANDS`.

Only the module of the command being run is imported (as pip does): the others import
torch, OpenCV or Numba, seconds that ``stexture --help`` and ``stexture inspect`` need not
pay."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Collection

# Idle OpenMP threads (torch's, Numba's omp layer) sleep instead of spinning: on a CPU shared
# with other jobs, spinning made training 5-8x slower here. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import __version__, _exit_interrupted

# Every subcommand module with its help, in the order `stexture --help` lists them.
COMMANDS = {
    "split": (
        "Decompose one image file into <stem>-structure.png and <stem>-texture.png in --out "
        "(the texture offset to mid-grey, so that it can be seen)."
    ),
    "decompose": (
        "Decompose an image folder (SRC/<class>/...), a CSV/JSONL manifest (path,label) or "
        "WebDataset shards into train/val shards with structure layers in OUT."
    ),
    "label": (
        "Write soft labels beside the shards: per sample, label maps s (a structure model "
        "on the structure layer) and t (a texture model on the texture layer), from given "
        "models or from models trained here with cross-fitting."
    ),
    "inspect": (
        "Check every shard in OUT against manifest.json (files, checksums, counts, "
        "decoding, structure), print samples per split and class, and write a contact sheet "
        "PNG."
    ),
    "sweep": (
        "Train a model per label weight k and seed on cue-conflict batches (plus a vanilla "
        "baseline and the k=0/k=1 ensemble) and report the k with the best clean accuracy."
    ),
    "synth": (
        "Generate the synthetic furniture dataset (train, test, test_shifted) as "
        "OUT/<split>/<class>/<id>.jpg."
    ),
    "demo": (
        "Generate synthetic furniture photos, decompose them with RTV into shards, sweep k "
        "in {0, 0.5, 0.8, 1} plus a vanilla baseline with the small model, and write a "
        "report with a sample sheet (2.5-5 minutes on 2 cores; --quick 1.5-2.5)."
    ),
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default once: appended as ``(default: X)`` unless the help text
    already says what the default is, and left out where there is nothing to show (a flag
    that is off, an option that is unset or an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = (action.default is None or action.default is False
                   or action.default == [] or action.default is argparse.SUPPRESS)
        if nothing or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``, which every subcommand takes."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the outcome and errors: no progress bars or "
                        "progress lines")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``stexture`` parser. ``commands``: the subcommands whose modules are imported and
    whose options are added (default all); the others are listed with their help only."""
    parser = argparse.ArgumentParser(
        prog="stexture",
        description="Structure/texture decomposition, WebDataset shards and cue-conflict "
        "training with soft labels.",
        epilog="`stexture COMMAND --help` lists the options of a command. Start with "
        "`stexture demo --quick`.",
    )
    parser.add_argument("--version", action="version", version=f"stexture {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=summary, description=summary, formatter_class=HelpFormatter,
        )
        if commands is None or name in commands:
            module = importlib.import_module(f"stexture.commands.{name}")
            module.add_arguments(sub)
            _add_quiet_argument(sub)
            sub.set_defaults(_run=module.run)
    return parser


def _named_command(argv: list[str] | None) -> tuple[str, ...]:
    """The subcommand on the command line (its first word that is not an option), if any:
    the top level's options (``--help``, ``--version``) take no value."""
    words = sys.argv[1:] if argv is None else argv
    return tuple(word for word in words if not word.startswith("-"))[:1]


def main(argv: list[str] | None = None) -> int:
    try:
        # building the parser imports the command's module (torch, for some): seconds in
        # which a Ctrl-C must end the command as quietly as one during its work
        args = build_parser(_named_command(argv)).parse_args(argv)
        # the command cleans up after a Ctrl-C (partial files, locks): Python's handler again,
        # in place of the start-up one only (a program calling main() keeps its own)
        if signal.getsignal(signal.SIGINT) is _exit_interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return _run(args)
    except KeyboardInterrupt:
        print("stexture: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    # ImportError: an optional extra (Ray) that is not installed; its message says how
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        print(f"stexture {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a name too long, a permission, a full disk: the system's words
        print(f"stexture {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
