"""The fenced code blocks of a Markdown file, with the markers that say how a test runs them.

A block is a fence of backticks with a language (```` ```python ````, ```` ```bash ````);
fences without one (program output) and MyST directives (```` ```{toctree} ````) are not
code. HTML comments on the lines right before
the fence (invisible when the Markdown is rendered) tell the tests how to run it:

``<!-- not-run: REASON -->``
    the block is not run (it needs a GPU, a cluster, the network, ...); REASON says why and
    shows in the test report.
``<!-- test-replace: OLD => NEW -->``
    run the block with every ``OLD`` replaced by ``NEW`` (tiny data, one epoch); one comment
    per replacement. A replacement whose ``OLD`` is no longer in the block is an error, so
    an edited block cannot silently run as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RUN_LANGUAGES", "Block", "extract_blocks"]

# languages run by the tests, and how: "python" as a script, the others by bash
RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash",
                 "shell": "bash"}
# a MyST directive (```{toctree}, ```{include} path) in the docs' pages is a fence too, but
# not code
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>```+)\s*"
                    r"(?:(?P<directive>\{[\w:.-]+\})(?:\s.*)?|(?P<lang>[\w+-]*)\s*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|test-replace)\s*:\s*(?P<body>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*(not-run|test-replace)\b")


@dataclass
class Block:
    """One fenced block: where it is, its language and code, and its markers."""

    path: Path
    line: int  # 1-based line of the opening fence
    heading: str  # the nearest heading above it
    language: str
    code: str
    not_run: str | None = None
    replacements: list[tuple[str, str]] = field(default_factory=list)

    @property
    def runner(self) -> str | None:
        """``"python"``, ``"bash"``, or ``None`` for a language the tests do not run."""
        return RUN_LANGUAGES.get(self.language.lower())

    def runnable_code(self) -> str:
        """The code with the replacements applied; ``ValueError`` names one that no longer
        matches."""
        code = self.code
        for old, new in self.replacements:
            if old not in code:
                raise ValueError(f"{self.path.name}:{self.line}: test-replace {old!r} is not in "
                                 "the block any more; update the marker")
            code = code.replace(old, new)
        return code


def _markers(lines: list[str], fence: int,
             where: str) -> tuple[str | None, list[tuple[str, str]], range]:
    """The markers on the comment lines directly above line index ``fence``, and the
    indices of those lines."""
    not_run, replacements = None, []
    i = fence - 1
    while i >= 0 and (match := _MARKER.match(lines[i])):
        kind, body = match["kind"], match["body"]
        if kind == "not-run":
            if not body:
                raise ValueError(f"{where}: a not-run marker needs a reason")
            not_run = body
        else:
            old, sep, new = body.partition(" => ")
            if not sep or not old:
                raise ValueError(f"{where}: test-replace needs 'OLD => NEW', got {body!r}")
            replacements.insert(0, (old, new))
        i -= 1
    return not_run, replacements, range(i + 1, fence)


def extract_blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file ``path`` with a language, in order.

    ``ValueError`` for a fence left open, a malformed marker, or a marker that is not
    directly above a fence (it would apply to nothing).
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, heading, i = [], "", 0
    used: set[int] = set()
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if not fence:
            i += 1
            continue
        indent, ticks, language = fence["indent"], fence["ticks"], fence["lang"] or ""
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip() == ticks), None)
        if end is None:
            raise ValueError(f"{path.name}:{i + 1}: a code fence that is never closed")
        where = f"{path.name}:{i + 1}"
        not_run, replacements, marker_lines = _markers(lines, i, where)
        used.update(marker_lines)
        if language:
            code = "\n".join(text[len(indent):] if text.startswith(indent) else text
                             for text in lines[i + 1:end])
            blocks.append(Block(path, i + 1, heading, language, code + "\n", not_run,
                                replacements))
        elif not_run is not None or replacements:
            raise ValueError(f"{where}: a marker above a fence without a language")
        i = end + 1
    stray = [n + 1 for n, text in enumerate(lines) if _ANY_MARKER.search(text) and n not in used]
    if stray:
        raise ValueError(f"{path.name}: marker(s) on line(s) {stray} are not directly above a "
                         "code fence")
    return blocks
