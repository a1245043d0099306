"""Writing a dataset of stexture shards, the end: ``manifest.json``, ``index.csv``,
``rejected.jsonl`` and the wids indexes of a complete folder, and the run's summary."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import storage
from .format import FORMAT_NAME, FORMAT_VERSION, INDEX_NAME, MANIFEST_NAME, REJECTED_NAME
from .format.offsets import (
    OFFSETS_MANIFEST_KEY,
    ShardEntries,
    encode_offsets,
    offsets_name,
    scan_tar_bytes,
)
from .interop import write_wids_indexes
from .plan import SPLITS, Plan, ShardSettings
from .write import PROGRESS_NAME, ShardResult, _write_json

__all__ = [
    "MIN_SHARDS_HINT",
    "WriteSummary",
    "assemble_manifest",
    "finish_dataset",
    "shard_warnings",
    "write_sample_offsets",
]

# a split with fewer shards than this starves a DataLoader with several workers
MIN_SHARDS_HINT = 8


@dataclass(frozen=True)
class WriteSummary:
    """What a run produced; :meth:`text` is what the command prints."""

    out: str
    accepted: int
    rejected: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    shards: dict[str, int]
    written: int
    skipped: int
    warnings: list[str]
    decompose_seconds: float = 0.0
    ignored: int = 0

    def text(self) -> str:
        lines = [f"{self.out}: {self.accepted} samples in "
                 + ", ".join(f"{n} {split} shard(s)" for split, n in self.shards.items())
                 + f" ({self.written} written, {self.skipped} already complete)"]
        if self.rejected:
            lines.append("left out: " + ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.rejected.items()))
                + f" (details in {REJECTED_NAME})")
        else:
            lines.append("left out: none")
        if self.ignored:
            lines.append(f"ignored: {self.ignored} file(s) without an image extension")
        classes = sorted({c for counts in self.class_counts.values() for c in counts})
        width = max([len(c) for c in classes] + [5])
        lines.append(f"{'class':<{width}} " + " ".join(f"{s:>7}" for s in self.class_counts))
        for name in classes:
            lines.append(f"{name:<{width}} " + " ".join(
                f"{counts.get(name, 0):>7}" for counts in self.class_counts.values()))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _versions() -> dict[str, str]:
    import numba
    import PIL

    from .. import __version__

    return {"stexture": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "opencv": cv2.__version__, "pillow": PIL.__version__,
            "python": ".".join(map(str, sys.version_info[:3]))}


def assemble_manifest(plan: Plan, settings: ShardSettings,
                      results: dict[str, ShardResult]) -> dict[str, Any]:
    """The ``manifest.json`` content for a plan whose every shard is in ``results``."""
    missing = [job.name for job in plan.jobs if job.name not in results]
    if missing:
        raise ValueError(f"cannot assemble the manifest: {len(missing)} shard(s) not written, "
                         f"first {missing[0]}")
    splits = {}
    counts = plan.split_counts()
    for split in SPLITS:
        shards = [{"name": job.name, "count": results[job.name].count,
                   "sha256": results[job.name].sha256, "inputs": job.inputs}
                  for job in plan.jobs if job.split == split]
        splits[split] = {"count": sum(s["count"] for s in shards), "shards": shards,
                         "class_counts": dict(sorted(counts[split].items()))}
    reasons = Counter(r.reason for r in plan.rejected)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "classes": plan.classes,
        "splits": splits,
        "method": settings.method,
        "params": settings.params,
        "structure_encoding": "structure.dzst: vertical delta + zstd, 8-bit rounding of the "
                              "method's output",
        "settings": settings.content(),
        "plan_digest": plan.digest,
        "source": plan.source,
        "inputs": {"listed": plan.listed, "ignored_non_images": plan.ignored,
                   "accepted": sum(len(job.entries) for job in plan.jobs),
                   "rejected": dict(sorted(reasons.items()))},
        "versions": _versions(),
    }


def shard_warnings(plan: Plan) -> list[str]:
    """A warning per split with samples but fewer shards than a plain WebDataset reader
    needs for a multi-worker DataLoader (it gives each worker whole shards). stexture's own
    loaders deal samples, not shards, to the workers and ranks, so the warning says that it
    is about the other readers only."""
    warnings = []
    for split in SPLITS:
        n = sum(1 for job in plan.jobs if job.split == split)
        if 0 < n < MIN_SHARDS_HINT:
            warnings.append(
                f"{split} has {n} shard(s): read with plain webdataset (which splits by "
                f"shard), a DataLoader with more than {n} worker(s) leaves some idle; a "
                "smaller --shard-size gives more (stexture's make_loader splits by sample: "
                "not affected)")
    return warnings


def _entries_of(out: storage.Location, result: ShardResult) -> ShardEntries:
    """Where the samples of a written shard lie: from the writer, or (a shard a resumed run
    found complete) read back from ``out`` and checked against the SHA-256 recorded."""
    if result.entries is not None:
        return result.entries
    path = storage.join(out, result.name)
    entries = scan_tar_bytes(result.name, storage.read_bytes(path), str(path))
    if entries.sha256 != result.sha256:
        raise ValueError(f"{path} changed since it was written (its SHA-256 differs from the "
                         "progress record); run the same command again to write it anew")
    return entries


def write_sample_offsets(out: str | Path, manifest: dict[str, Any],
                         entries: dict[str, ShardEntries]) -> dict[str, dict[str, str]]:
    """Write the offsets file of each split with shards (``{split}.offsets.json``, see
    :mod:`stexture.shards.format.offsets`) from the ``entries`` of every shard the
    ``manifest`` content lists, and return what the manifest records of them under
    ``sample_offsets``: split -> ``name``, ``sha256``.

    Parameters
    ----------
    out : str or Path
        The shard folder (a path or an fsspec URL).
    manifest : dict
        The manifest content (as :func:`assemble_manifest` makes it).
    entries : dict of str to ShardEntries
        Each shard's entries, by shard name.

    Returns
    -------
    dict
        The ``sample_offsets`` entry of the manifest.
    """
    out = storage.location(out)
    recorded = {}
    for split, entry in manifest["splits"].items():
        if not entry["shards"]:
            continue
        shards = [entries[shard["name"]] for shard in entry["shards"]]
        payload = encode_offsets(split, shards)
        name = offsets_name(split)
        storage.write_atomically(storage.join(out, name), payload)
        recorded[split] = {"name": name, "sha256": hashlib.sha256(payload).hexdigest()}
    return recorded


def finish_dataset(out: str | Path, plan: Plan, settings: ShardSettings,
                   results: dict[str, ShardResult], written: int = 0) -> WriteSummary:
    """Write ``index.csv``, ``rejected.jsonl``, the wids indexes (``{split}.wids.json``), the
    sample offsets (``{split}.offsets.json``) and ``manifest.json`` (last: its presence
    means the folder is complete), remove the progress file, and summarise."""
    out = storage.location(out)
    manifest = assemble_manifest(plan, settings, results)
    manifest[OFFSETS_MANIFEST_KEY] = write_sample_offsets(
        out, manifest, {name: _entries_of(out, result) for name, result in results.items()})
    index = io.StringIO()
    rows = csv.writer(index, lineterminator="\n")
    rows.writerow(["key", "split", "shard", "cls"])
    for job in plan.jobs:
        rows.writerows((item.key, job.split, job.name, cls) for item, cls in job.entries)
    storage.write_atomically(storage.join(out, INDEX_NAME), index.getvalue().encode("utf-8"))
    rejected = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in plan.rejected)
    storage.write_atomically(storage.join(out, REJECTED_NAME), rejected.encode("utf-8"))
    write_wids_indexes(out, manifest)
    _write_json(storage.join(out, MANIFEST_NAME), manifest)
    storage.remove(storage.join(out, PROGRESS_NAME))
    counts = plan.split_counts()
    return WriteSummary(
        out=str(out),
        accepted=manifest["inputs"]["accepted"],
        rejected=manifest["inputs"]["rejected"],
        class_counts={split: dict(sorted(counts[split].items())) for split in SPLITS},
        shards={split: len(manifest["splits"][split]["shards"]) for split in SPLITS},
        written=written,
        skipped=len(plan.jobs) - written,
        warnings=shard_warnings(plan),
        decompose_seconds=sum(r.decompose_seconds for r in results.values()),
        ignored=plan.ignored,
    )
