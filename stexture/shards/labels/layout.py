"""Where a label set lives and what its members and manifest are called."""

from __future__ import annotations

import re
from pathlib import Path

LABELS_FORMAT = "stexture-soft-labels"
LABELS_VERSION = 1
#: The sidecar manifest's ``method`` (it is read as a shard manifest).
METHOD = "soft-labels"
PROGRESS_NAME = "progress.json"
LABEL_LAYERS = ("s", "t")
_FOLDER_PREFIX = "labels-"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def value_field(layer: str) -> str:
    """The member holding ``layer``'s probabilities: ``s.npy`` / ``t.npy``."""
    return f"{layer}.npy"


def index_field(layer: str) -> str:
    """The member holding ``layer``'s class indices under top-k: ``s.idx.npy``."""
    return f"{layer}.idx.npy"


def label_folder(root: str | Path, name: str) -> Path:
    """``ROOT/labels-NAME``; ``ValueError`` for a name that is not 1-64 of ``[A-Za-z0-9_-]``
    (it becomes a folder name)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a label set's name must be 1-64 letters, digits, '_' or '-', got "
                         f"{name!r}")
    return Path(root) / f"{_FOLDER_PREFIX}{name}"
