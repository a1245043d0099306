"""Split study: each method and parameter set against the renderer's ground truth.

For every image size and method setting it decomposes the same rendered images and
measures the split with :func:`stexture.datasets.split_quality` (the error
``E = S - H = M - T`` written as ``P + R``, ``P`` its fit by the material at a few
scales): ``a`` (the material's amplitude left in the structure, pixel for pixel),
``||P||^2 / ||M||^2`` (the material's energy left in it), ``||R||^2 / ||T||^2`` (the share
of the texture's energy that is shape) and where ``R`` lies (within ``BAND`` px of the
object's outline, of another boundary, or inside a surface). A setting's score is the larger
of the two energy shares (material in the structure, shape in the texture), each averaged
over the images: a split is only as good as its worse leak. Per size, the best RTV
setting is the candidate for :func:`stexture.datasets.synthetic_rtv_params`.

    .venv/bin/python -m experiments.split_quality.run                 # 6 per class, ~4 min
    .venv/bin/python -m experiments.split_quality.run --per-class 1   # a quick look

Images: ``render_furniture(class, image_rng(seed, "split_study", class, i), size, 0.8,
layers=True)`` for the eight classes, ``i < per_class``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stexture import decompose
from stexture.datasets import (
    CLASSES,
    image_rng,
    render_furniture,
    rendering_truth,
    split_quality,
    synthetic_rtv_params,
)

SIZES = (32, 64, 96, 128)
SPLIT = "split_study"
#: Pixels each side of a boundary that count as silhouette or seam: the renderer's 3x3
#: blur and the smoothing spread an edge over about two.
BAND = 2


def grid(size: int) -> list[tuple[str, dict[str, float]]]:
    """Method settings tried at ``size``: scales follow the image (``size / 64`` ...)."""
    settings: list[tuple[str, dict[str, float]]] = []
    # RTV's and RGF's scales stop at 0.5 px: a divisor that goes below is left out
    for sigma in sorted({max(size / d, 0.5) for d in (128, 64, 32, 16, 8)}):
        for lam in (0.0005, 0.001, 0.002, 0.004, 0.01):
            settings.append(("rtv", {"lam": lam, "sigma": sigma}))
    for sigma_s in sorted({max(size / d, 0.5) for d in (64, 32, 16)}):
        for sigma_r in (0.05, 0.1, 0.2):
            settings.append(("rgf", {"sigma_s": sigma_s, "sigma_r": sigma_r}))
    for weight in (0.01, 0.03, 0.1, 0.3):
        settings.append(("tv", {"weight": weight}))
    return settings


@dataclass
class Row:
    """One method setting at one size: the measures averaged over the images."""

    size: int
    method: str
    params: dict[str, float]
    material_in_structure: float
    material_energy_in_structure: float
    shape_in_texture: float
    material_energy_se: float  # standard errors over the images
    shape_in_texture_se: float
    silhouette: float
    seams: float
    interior: float
    seconds: float

    @property
    def score(self) -> float:
        """The worse leak, as energy shares (lower is better)."""
        return max(self.material_energy_in_structure, self.shape_in_texture)


def measure(size: int, per_class: int, seed: int) -> list[Row]:
    """Every setting of :func:`grid` on the same ``8 * per_class`` renderings."""
    renderings = [render_furniture(name, image_rng(seed, SPLIT, name, i), size, 0.8,
                                   layers=True)
                  for name in CLASSES for i in range(per_class)]
    truths = [rendering_truth(r) for r in renderings]
    rows = []
    for method, params in grid(size):
        results, start = [], time.perf_counter()
        for rendering, (shape, material) in zip(renderings, truths, strict=True):
            structure, texture = decompose(rendering.image, method, **params)
            results.append(split_quality(structure, texture, shape, material,
                                         rendering.surfaces, rendering.object_mask, BAND))
        seconds = (time.perf_counter() - start) / len(renderings)
        mean = {name: float(np.mean([getattr(q, name) for q in results])) for name in
                ("material_in_structure", "material_energy_in_structure", "shape_in_texture")}
        for name, key in (("material_energy_se", "material_energy_in_structure"),
                          ("shape_in_texture_se", "shape_in_texture")):
            values = [getattr(q, key) for q in results]
            mean[name] = float(np.std(values, ddof=1) / np.sqrt(len(values))) \
                if len(values) > 1 else float("nan")
        where = {region: float(np.mean([q.shape_sources[region] for q in results]))
                 for region in ("silhouette", "seams", "interior")}
        rows.append(Row(size, method, params, **mean, **where, seconds=seconds))
    return rows


def _params_text(params: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in params.items())


def table(rows: list[Row]) -> str:
    """The study as a markdown table, best score first within each size and method."""
    lines = ["| size | method | parameters | a | material energy in S | shape in T "
             "| sil / seams / inner | score | s/img |", "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.size, r.method, r.score)):
        lines.append(
            f"| {row.size} | {row.method} | {_params_text(row.params)} | "
            f"{row.material_in_structure:.3f} | {row.material_energy_in_structure:.3f} ± "
            f"{row.material_energy_se:.3f} | {row.shape_in_texture:.3f} ± "
            f"{row.shape_in_texture_se:.3f} | {row.silhouette:.2f} / {row.seams:.2f} / "
            f"{row.interior:.2f} | {row.score:.3f} | {row.seconds:.3f} |")
    return "\n".join(lines)


def best(rows: list[Row]) -> str:
    """Per size: the best setting of each method, and the current defaults' row."""
    lines = ["| size | method | best parameters | a | material energy in S | shape in T "
             "| score |", "|---|---|---|---|---|---|---|"]
    for size in sorted({r.size for r in rows}):
        for method in ("rtv", "rgf", "tv"):
            candidates = [r for r in rows if r.size == size and r.method == method]
            top = min(candidates, key=lambda r: r.score)
            lines.append(f"| {size} | {method} | {_params_text(top.params)} | "
                         f"{top.material_in_structure:.3f} | "
                         f"{top.material_energy_in_structure:.3f} | "
                         f"{top.shape_in_texture:.3f} | {top.score:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the study and print (and optionally write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    start = time.perf_counter()
    for size in (int(s) for s in args.sizes.split(",")):
        rows += measure(size, args.per_class, args.seed)
        print(f"size {size} done ({time.perf_counter() - start:.0f} s)", flush=True)
    print(table(rows))
    print()
    print(best(rows))
    print()
    print("current synthetic_rtv_params:",
          {size: synthetic_rtv_params(size) for size in sorted({r.size for r in rows})})
    if args.json:
        args.json.write_text(json.dumps([{**row.__dict__, "score": row.score} for row in rows],
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
