"""``.. stexture-cli::``: the command line's reference, rendered from the argparse parser
that ``stexture`` itself runs (``stexture.cli.build_parser``), so that the options are
written in one place: the ``--help`` of each command."""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for subcommands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


class StextureCli(SphinxDirective):
    """One section per subcommand, with its ``--help`` as a literal block."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from stexture import cli

        os.environ["COLUMNS"] = "96"  # argparse wraps the help at the terminal's width
        parser = cli.build_parser()
        out: list[nodes.Node] = [nodes.literal_block(text=parser.format_help())]
        for name, sub in _subparsers(parser).items():
            section = nodes.section(ids=[f"stexture-{name}"])
            section += nodes.title(text=f"stexture {name}")
            section += nodes.literal_block(text=sub.format_help())
            out.append(section)
        return out


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("stexture-cli", StextureCli)
    return {"version": "1", "parallel_read_safe": True}
