"""Writing the synthetic furniture dataset as an ImageFolder tree.

Layout::

    OUT/train/<class>/<class>-00000.jpg ...      texture_correlation as given
    OUT/test/<class>/...                         same distribution as train (clean test)
    OUT/test_shifted/<class>/...                 texture_correlation = 0 (robustness)
    OUT/records.csv                              one row per image: material, room, ...
    OUT/dataset.json                             the options and counts

No validation split is written: the shard pipeline holds one out of ``train`` itself.
Each image is drawn from its own generator seeded by ``(seed, split, class, index)``, so
an image does not depend on the order of generation, on the other classes chosen, or on
how many images the other splits have; the same arguments give the same bytes (with the
same numpy, OpenCV and Pillow builds: their resampling and JPEG coders fix the last bits).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

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
_RECORD_FIELDS = ("split", "class_name", "index", "path", "material", "typical", "wall",
                  "floor", "occluded", "object_fraction", "jpeg_quality")


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`make_furniture_dataset` wrote: counts per split and the time taken."""

    root: Path
    counts: dict[str, int]
    typical_share: dict[str, float]  # per split, share of images with a typical material
    seconds: float

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
    ``lam = 0.004`` and ``sigma = size / 32``.

    RTV's defaults (``lam = 0.01``, ``sigma = 3``; Xu et al. 2012 smooth photos of about
    500 px with them) wipe out parts a few pixels wide: at 64 px the legs of chairs and
    tables end up in the texture layer, so the texture carries shape. These values keep
    legs, frames and shelves in the structure layer and still move the materials (wood
    grain, weave, stripes) to the texture layer; they were chosen by looking at contact
    sheets of image | structure | texture at 64 and 128 px.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 pixel, got {size}")
    return {"lam": 0.004, "sigma": size / 32}


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


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise ValueError(f"{root} is not empty; choose another folder or overwrite")
        # Remove only what this function writes: stale class folders would corrupt the tree.
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        for name in (RECORDS_NAME, INFO_NAME):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


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
    overwrite : replace the splits, ``records.csv`` and ``dataset.json`` of an earlier run.
    progress : show a progress bar.
    """
    classes = tuple(CLASSES if classes is None else classes)
    test_per_class = max(1, per_class // 4) if test_per_class is None else test_per_class
    shifted_per_class = test_per_class if shifted_per_class is None else shifted_per_class
    _check(classes, per_class, test_per_class, shifted_per_class, size, texture_correlation,
           seed)
    root = Path(out)
    _prepare(root, overwrite)

    plan = {"train": (per_class, texture_correlation), "test": (test_per_class,
            texture_correlation), "test_shifted": (shifted_per_class, 0.0)}
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
        "generator": "stexture.datasets.make_furniture_dataset",
        "classes": list(classes), "size": size, "seed": seed,
        "texture_correlation": texture_correlation,
        "splits": {split: {"per_class": plan[split][0], "count": counts[split],
                           "texture_correlation": plan[split][1]} for split in counts},
        "typical_materials": {name: list(TYPICAL_MATERIALS[name]) for name in classes},
    }
    (root / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    share = {split: typical[split] / counts[split] for split in counts}
    return DatasetSummary(root, counts, share, seconds)


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
