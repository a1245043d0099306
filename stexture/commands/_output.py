"""Printing what a command found, whatever the terminal's encoding."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["print_line", "print_text"]


def print_text(text: str, file: TextIO | None = None) -> None:
    """Print ``text``; characters the stream cannot encode (a file name that is not valid
    UTF-8 arrives as surrogates) are printed as backslash escapes instead of ending the
    command with a ``UnicodeEncodeError`` after all its work is done."""
    stream = sys.stdout if file is None else file
    encoding = getattr(stream, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)


def print_line(line: str, file: TextIO | None = None) -> None:
    """:func:`print_text` above any progress bar on the terminal (which is redrawn below it),
    flushed at once, so a long command's lines reach a log file as they happen."""
    stream = sys.stdout if file is None else file
    with tqdm.external_write_mode(file=stream):
        print_text(line, stream)
        stream.flush()
