"""Printing what a command found, whatever the terminal's encoding."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["print_text"]


def print_text(text: str, file: TextIO | None = None) -> None:
    """Print ``text``; characters the stream cannot encode (a file name that is not valid
    UTF-8 arrives as surrogates) are printed as backslash escapes instead of ending the
    command with a ``UnicodeEncodeError`` after all its work is done."""
    stream = sys.stdout if file is None else file
    encoding = getattr(stream, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)
