"""The ``stexture`` command. Each subcommand is a module in :mod:`stexture.commands` with
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Idle OpenMP threads (torch's, Numba's omp layer) sleep instead of spinning: on a CPU shared
# with other jobs, spinning made training 5-8x slower here. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import __version__

# One line per subcommand module, in the order `stexture --help` lists them.
COMMANDS = (
    "split",
    "decompose",
    "label",
    "inspect",
    "sweep",
    "synth",
    "demo",
)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stexture",
        description="Structure/texture decomposition, WebDataset shards and cue-conflict "
        "training with soft labels.",
        epilog="`stexture COMMAND --help` lists the options of a command. Start with "
        "`stexture demo --quick`.",
    )
    parser.add_argument("--version", action="version", version=f"stexture {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        module = importlib.import_module(f"stexture.commands.{module_name}")
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=module.HELP,
            formatter_class=HelpFormatter,
        )
        module.add_arguments(sub)
        _add_quiet_argument(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("stexture: interrupted", file=sys.stderr)
        return 130
    # ImportError: an optional extra (Ray) that is not installed; its message says how
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        print(f"stexture {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
