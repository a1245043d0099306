"""The ``progress.json`` of a sidecar being written (:mod:`.soft_labels`): settings, trained
models and written shards, what a run started again skips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..shards import storage
from ..shards.format import (
    MANIFEST_NAME,
    check_member_file_name,
    read_manifest,
)
from ..shards.labels import (
    LABELS_FORMAT,
    PROGRESS_NAME,
)
from ..shards.storage import sha256_of

_MODELS_FOLDER = "models"


class _Progress:
    """``progress.json`` of a sidecar: the settings, the trained models and the written
    shards with their SHA-256."""

    def __init__(self, folder: Path, settings: dict[str, Any], overwrite: bool) -> None:
        self.folder = folder
        self.path = folder / PROGRESS_NAME
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        self.done: dict[str, str] = {}
        self.models: dict[str, str] = {}
        saved = self._saved()
        if saved is not None and (overwrite or saved.get("settings") != self.settings):
            if not overwrite:
                differ = sorted(k for k in set(self.settings) | set(saved.get("settings", {}))
                                if self.settings.get(k) != saved.get("settings", {}).get(k))
                raise ValueError(f"{folder} holds labels made with other settings "
                                 f"({', '.join(differ)} differ): use overwrite (--overwrite) "
                                 "to replace them, or another name")
            self._remove(saved)
            saved = None
        elif saved is None and (folder / MANIFEST_NAME).is_file():
            if not overwrite:
                raise ValueError(f"{folder} holds a label set without its progress file: "
                                 "use overwrite (--overwrite) to replace it")
            self._remove({"done": _manifest_shards(folder)})
        if saved is not None:
            self.done, self.models = dict(saved.get("done", {})), dict(saved.get("models", {}))
        folder.mkdir(parents=True, exist_ok=True)
        self.save()

    def _saved(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path} is damaged ({exc}); remove it to start over") from exc

    def _remove(self, saved: dict[str, Any]) -> None:
        """Remove what this sidecar wrote (as its progress names it), nothing else."""
        names = list(saved.get("done", {})) + [MANIFEST_NAME]
        for file in names:
            (self.folder / check_member_file_name(file, str(self.path))).unlink(missing_ok=True)
        for file in saved.get("models", {}):
            path = self.folder / _MODELS_FOLDER / check_member_file_name(file, str(self.path))
            path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.done, self.models = {}, {}

    def save(self) -> None:
        payload = {"format": LABELS_FORMAT, "settings": self.settings, "done": self.done,
                   "models": self.models}
        storage.write_atomically(self.path, (json.dumps(payload, indent=2) + "\n").encode())

    def finished(self, shard: str) -> bool:
        path = self.folder / shard
        return shard in self.done and path.is_file() and sha256_of(path) == self.done[shard]


def _manifest_shards(folder: Path) -> dict[str, str]:
    try:
        sidecar = read_manifest(folder)
    except (ValueError, FileNotFoundError):
        return {}
    return {info.name: info.sha256 for infos in sidecar.splits.values() for info in infos}
