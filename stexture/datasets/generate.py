"""Writing the synthetic furniture dataset as an ImageFolder tree.

Layout::

    OUT/train/<class>/<class>-00000.jpg ...      texture_correlation as given
    OUT/test/<class>/...                         same distribution as train (clean test)
    OUT/test_shifted/<class>/...                 texture_correlation = 0 (robustness)
    OUT/records.csv                              one row per image: material, room, ...
    OUT/dataset.json                             the options and counts (written last)

While it runs, ``OUT/.stexture-synth.json`` names the classes and the images per split it
will write (before any is written), and ``OUT/.stexture-lock`` holds the folder against a
second run. ``overwrite`` deletes only what the record of an earlier run (``dataset.json``,
else that progress file) names, and refuses, deleting nothing, when a split folder holds
anything else (a file there would become part of the data set).

No validation split is written: the shard pipeline holds one out of ``train`` itself.
Each image is drawn from its own generator seeded by ``(seed, split, class, index)``, so
an image does not depend on the order of generation, on the other classes chosen, or on
how many images the other splits have; the same arguments give the same bytes (with the
same numpy, OpenCV and Pillow builds: their resampling and JPEG coders fix the last bits).
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .._lifecycle import LOCK_NAME, hold_output
from .furniture import CLASSES, TYPICAL_MATERIALS
from .materials import prepare_tiles
from .scene import check_class, check_options, encode_jpeg, render_furniture

__all__ = [
    "SPLITS",
    "DatasetSummary",
    "image_rng",
    "make_cue_conflict_split",
    "make_furniture_dataset",
    "synthetic_rtv_params",
]

SPLITS = ("train", "test", "test_shifted")
CONFLICT_SPLIT = "cue_conflict"
CONFLICT_RECORDS_NAME = "conflicts.csv"
RECORDS_NAME = "records.csv"
INFO_NAME = "dataset.json"
PROGRESS_NAME = ".stexture-synth.json"
_GENERATOR = "stexture.datasets.make_furniture_dataset"
#: The largest image side :func:`make_furniture_dataset` draws: the renderer holds several
#: float32 layers of ``size**2`` pixels (measured: one 2048 px image, 0.77 GB peak resident
#: and 10 s; memory grows with ``size**2``), and a data set for shape/texture training
#: needs nothing near it.
MAX_SIZE = 2048
_IMAGE_NAME = re.compile(r"^(?P<cls>[a-z_]+)-(?P<index>[0-9]{5})\.jpg$")
_RECORD_FIELDS = ("split", "class_name", "index", "path", "material", "typical", "wall",
                  "floor", "occluded", "object_fraction", "jpeg_quality")


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`make_furniture_dataset` wrote: counts per split and the time taken."""

    root: Path
    counts: dict[str, int]
    typical_share: dict[str, float]  # per split, share of images with a typical material
    seconds: float
    removed: int = 0  # images of an earlier run that ``overwrite`` deleted

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def image_rng(seed: int, split: str, class_name: str, index: int) -> np.random.Generator:
    """The generator of one image, from ``(seed, split, class, index)`` alone."""
    # crc32 is stable across processes and Python versions, unlike hash().
    key = [seed, zlib.crc32(split.encode()), zlib.crc32(class_name.encode()), index]
    return np.random.default_rng(key)


def synthetic_rtv_params(size: int) -> dict[str, float]:
    """RTV parameters for the synthetic furniture drawn at ``size`` pixels:
    ``lam = 0.002 * size / 128`` and ``sigma = size / 16``.

    Chosen by the split study (``experiments/split_quality``): against the renderer's
    ground truth (:func:`split_quality`), these minimise the worse of the two leaks, the
    material's energy left in the structure and the share of the texture's energy that is
    shape, at 32, 64, 96 and 128 px (48 images per size; the grid, table and standard
    errors are in ``experiments/split_quality/README.md``). RTV's defaults
    (``lam = 0.01``, ``sigma = 3``; Xu et al. 2012 smooth photos of about 500 px with them)
    wipe out parts a few pixels wide; the earlier ``lam = 0.004``, ``sigma = size / 32``
    (chosen by eye) left less material in the structure (14% of its energy at 32 and
    64 px, against 35% and 31% now) but made far more of the texture shape (64% and 44%
    of its energy, against 42% and 34%). No setting separates the two well at 32 px.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 pixel, got {size}")
    return {"lam": 0.002 * size / 128, "sigma": size / 16}


def _check(classes: tuple[str, ...], per_class: int, test_per_class: int,
           shifted_per_class: int, size: int, texture_correlation: float, seed: int) -> None:
    if not classes:
        raise ValueError("classes must name at least one class")
    for name in classes:
        check_class(name)
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {', '.join(classes)}")
    if int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per_class must be an integer >= 1, got {per_class!r}")
    for name, value in (("test_per_class", test_per_class),
                        ("shifted_per_class", shifted_per_class)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    check_options(size, texture_correlation)
    if size > MAX_SIZE:
        raise ValueError(f"size must lie in [32, {MAX_SIZE}] pixels, got {size!r} (the "
                         f"renderer holds several float32 layers of size**2 pixels)")


def _recorded_splits(root: Path) -> dict[str, tuple[set[str], int]] | None:
    """What the record of an earlier run in ``root`` says it wrote: per split, its classes
    and images per class (``dataset.json``, else the progress file of a run that did not
    finish); ``None`` when there is no record; ``ValueError`` for a record synth did not
    write."""
    for name in (INFO_NAME, PROGRESS_NAME):
        path = root / name
        if not path.is_file() or path.is_symlink():
            continue
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            if info.get("generator") != _GENERATOR:
                raise ValueError("not written by synth")
            recorded = {}
            for split, entry in info["splits"].items():
                per_class = entry["per_class"]
                if split not in SPLITS or not isinstance(per_class, int):
                    raise ValueError(f"split {split!r}")
                recorded[split] = ({str(c) for c in info["classes"]}, per_class)
            return recorded
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a record stexture synth wrote ({exc}): synth "
                             "cannot tell which files it wrote there; nothing was deleted; "
                             "choose another folder") from None
    return None


def _owned_files(root: Path, recorded: dict[str, tuple[set[str], int]]
                 ) -> tuple[list[Path], list[Path], list[str]]:
    """The files and folders under ``root``'s split folders that ``recorded`` names (an
    image ``<split>/<class>/<class>-<index>.jpg`` with ``index < per_class``), and every
    other entry there, by relative path. A link is never ours."""
    files, folders, foreign = [], [], []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.exists() and not split_dir.is_symlink():
            continue
        classes, per_class = recorded.get(split, (set(), 0))
        if split_dir.is_symlink() or not split_dir.is_dir():
            foreign.append(split)
            continue
        for dirpath, dirnames, filenames in os.walk(split_dir):
            here = Path(dirpath)
            relative = here.relative_to(root)
            for name in sorted(dirnames + filenames):
                path = here / name
                mode = path.lstat().st_mode
                match = _IMAGE_NAME.match(name)
                if len(relative.parts) == 1 and stat.S_ISDIR(mode) and name in classes:
                    continue  # a class folder of the record: walked below
                if (len(relative.parts) == 2 and stat.S_ISREG(mode) and match
                        and match["cls"] == relative.parts[1]
                        and int(match["index"]) < per_class):
                    files.append(path)
                else:
                    foreign.append(path.relative_to(root).as_posix())
            dirnames[:] = [d for d in dirnames if len(relative.parts) == 1 and d in classes
                           and not (here / d).is_symlink()]
            folders.append(here)
    return files, folders, foreign


def _prepare(root: Path, overwrite: bool) -> int:
    """Make ``root`` ready to write; returns how many images of an earlier run it removed.

    A folder that holds anything (the lock aside) needs ``overwrite``, which removes only
    what an earlier run's record names, and refuses, removing nothing, when there is no
    such record or a split folder holds anything else."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a folder")
    present = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME) \
        if root.is_dir() else []
    if not present:
        root.mkdir(parents=True, exist_ok=True)
        return 0
    if not overwrite:
        raise ValueError(f"{root} is not empty; choose another folder or overwrite")
    recorded = _recorded_splits(root)
    if recorded is None:
        raise ValueError(
            f"{root} holds {', '.join(present[:5])}{' ...' if len(present) > 5 else ''} and no "
            f"record of an earlier synth run ({INFO_NAME}): --overwrite deletes only what "
            "synth wrote; nothing was deleted; choose another folder")
    files, folders, foreign = _owned_files(root, recorded)
    if foreign:
        raise ValueError(
            f"{root} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            f"which the record of the earlier synth run ({INFO_NAME}) does not name: synth "
            "did not write it, and a file in a split folder would become part of the data "
            "set; nothing was deleted; move it away or choose another folder")
    for path in files:
        path.unlink()
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()  # empty now: it held only the files removed above
    for name in (RECORDS_NAME, INFO_NAME, PROGRESS_NAME):
        path = root / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    return len(files)


def make_furniture_dataset(
    out: str | Path,
    *,
    classes: tuple[str, ...] | list[str] | None = None,
    per_class: int = 100,
    test_per_class: int | None = None,
    shifted_per_class: int | None = None,
    size: int = 128,
    texture_correlation: float = 0.8,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetSummary:
    """Write the synthetic furniture dataset under ``out`` (layout in the module docstring).

    Parameters
    ----------
    out : folder to create (must be empty or absent unless ``overwrite``).
    classes : subset of :data:`CLASSES` (default: all eight).
    per_class : training images per class.
    test_per_class : clean test images per class (default ``max(1, per_class // 4)``;
        0 skips the split).
    shifted_per_class : test images per class drawn with ``texture_correlation = 0``
        (default: ``test_per_class``; 0 skips the split).
    size : image side in pixels (>= 32).
    texture_correlation : probability that an object gets its class's typical material
        in ``train`` and ``test``; otherwise its material is uniform over all materials.
    seed : non-negative integer; images are a function of (seed, split, class, index).
    overwrite : replace the splits, ``records.csv`` and ``dataset.json`` of an earlier run:
        only what its record names is deleted; anything else in a split folder is refused
        (``ValueError`` naming it, nothing deleted).
    progress : show a progress bar.

    The folder is held for the run (:func:`stexture._lifecycle.hold_output`): a second run
    on it fails at once naming the first.
    """
    classes = tuple(CLASSES if classes is None else classes)
    test_per_class = max(1, per_class // 4) if test_per_class is None else test_per_class
    shifted_per_class = test_per_class if shifted_per_class is None else shifted_per_class
    _check(classes, per_class, test_per_class, shifted_per_class, size, texture_correlation,
           seed)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a folder")
    with hold_output(root, "stexture synth"):
        return _write_dataset(root, overwrite, classes, per_class, test_per_class,
                              shifted_per_class, size, texture_correlation, seed, progress)


def _write_dataset(root: Path, overwrite: bool, classes: tuple[str, ...], per_class: int,
                   test_per_class: int, shifted_per_class: int, size: int,
                   texture_correlation: float, seed: int, progress: bool) -> DatasetSummary:
    """:func:`make_furniture_dataset` once its options are checked and ``root`` is held."""
    removed = _prepare(root, overwrite)
    plan = {"train": (per_class, texture_correlation), "test": (test_per_class,
            texture_correlation), "test_shifted": (shifted_per_class, 0.0)}
    # named before any image is written: an --overwrite after a killed run removes them
    (root / PROGRESS_NAME).write_text(json.dumps({
        "generator": _GENERATOR, "classes": list(classes),
        "splits": {split: {"per_class": n} for split, (n, _) in plan.items() if n}}) + "\n")
    total = len(classes) * sum(n for n, _ in plan.values())
    counts = {split: 0 for split, (n, _) in plan.items() if n}
    typical = dict.fromkeys(counts, 0)
    prepare_tiles()
    start = time.perf_counter()
    with (root / RECORDS_NAME).open("w", newline="") as handle, \
            tqdm(total=total, desc="synth", unit="img", disable=not progress) as bar:
        writer = csv.DictWriter(handle, fieldnames=_RECORD_FIELDS)
        writer.writeheader()
        for split, (n, correlation) in plan.items():
            for class_name in classes:
                folder = root / split / class_name
                if n:
                    folder.mkdir(parents=True, exist_ok=True)
                for index in range(n):
                    rendering = render_furniture(class_name, image_rng(seed, split, class_name,
                                                                       index), size, correlation)
                    path = folder / f"{class_name}-{index:05d}.jpg"
                    path.write_bytes(encode_jpeg(rendering))
                    writer.writerow({"split": split, "index": index,
                                     "path": path.relative_to(root).as_posix(),
                                     **rendering.record()})
                    counts[split] += 1
                    typical[split] += rendering.typical
                    bar.update()
    seconds = time.perf_counter() - start
    info = {
        "generator": _GENERATOR,
        "classes": list(classes), "size": size, "seed": seed,
        "texture_correlation": texture_correlation,
        "splits": {split: {"per_class": plan[split][0], "count": counts[split],
                           "texture_correlation": plan[split][1]} for split in counts},
        "typical_materials": {name: list(TYPICAL_MATERIALS[name]) for name in classes},
    }
    (root / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    (root / PROGRESS_NAME).unlink()
    share = {split: typical[split] / counts[split] for split in counts}
    return DatasetSummary(root, counts, share, seconds, removed)


def make_cue_conflict_split(
    out: str | Path,
    *,
    classes: tuple[str, ...] | list[str] | None = None,
    per_class: int = 100,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Render cue-conflict images directly: class a's shape in class b's typical material.

    This is the oracle of the decomposition: a composite ``s_a + t_b`` tries to put b's
    texture on a's object; here the generator draws a's object and paints it in a typical
    material of b (:data:`TYPICAL_MATERIALS`), with no seam, no silhouette of b, no
    clipping. For each class a and index i, b is drawn uniformly among the other classes.
    Writes ``OUT/cue_conflict/<a>/<a>-as-<b>-<i>.jpg`` (an ImageFolder labelled with the
    structure class a) and ``OUT/cue_conflict/conflicts.csv`` (``path`` relative to the
    split folder, ``structure_class``, ``texture_class``, ``material``); returns the split
    folder. Images are a function of (seed, a, i) alone, from their own generator.
    """
    classes = tuple(CLASSES if classes is None else classes)
    _check(classes, per_class, 0, 0, size, 0.0, seed)
    if len(classes) < 2:
        raise ValueError("cue-conflict images need at least two classes")
    folder = Path(out) / CONFLICT_SPLIT
    if folder.exists():
        raise ValueError(f"{folder} exists; choose another folder")
    prepare_tiles()
    rows = []
    with tqdm(total=len(classes) * per_class, desc="oracle", unit="img",
              disable=not progress) as bar:
        for a in classes:
            (folder / a).mkdir(parents=True)
            others = [c for c in classes if c != a]
            for index in range(per_class):
                rng = image_rng(seed, CONFLICT_SPLIT, a, index)
                b = others[rng.integers(len(others))]
                typical = TYPICAL_MATERIALS[b]
                material = typical[rng.integers(len(typical))]
                rendering = render_furniture(a, rng, size, 0.0, material=material)
                relative = f"{a}/{a}-as-{b}-{index:05d}.jpg"
                (folder / relative).write_bytes(encode_jpeg(rendering))
                rows.append({"path": relative, "structure_class": a, "texture_class": b,
                             "material": material})
                bar.update()
    with (folder / CONFLICT_RECORDS_NAME).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("path", "structure_class",
                                                    "texture_class", "material"))
        writer.writeheader()
        writer.writerows(rows)
    return folder
