"""Does the shuffled texture layout remove the donor's silhouette? (issue 13)

A cue-conflict composite gives the texture of image *b* the label weight ``1 - k``. If that
texture still shows where *b*'s object was (its silhouette edges and seams), the ``1 - k``
part of the label is partly a *shape* label. This measures it directly: on synthetic
furniture whose materials are *not* tied to the class (``texture_correlation = 0``, so the
texture itself says nothing about the class), a model is trained and tested on texture
layers alone, ``x = 0.5 + P(t)``, with ``P`` the aligned layout or the shuffled one
(``stexture.mixing.compose`` with a tile permutation per image, as the loader makes them).

Pre-registered reading (written before the first run): accuracy above chance (1/8) on the
aligned texture is shape leaking through the texture layer; the shuffled layout removes
that leak if its accuracy is within 2 points of chance (upper end of the 95% interval over
seeds below 14.5%) and the aligned-minus-shuffled difference is above 0 (paired over seeds).

Donor options (issue 26, item 7): ``--donor whole`` is the texture layer as the loader
uses it; ``--donor flat`` keeps the texture only where the structure is flat (its largest
channel-mean forward difference below ``FLAT_STEP``, one pixel away from any step), so the
residual of silhouette edges, seams and thin parts is cut out; ``--donor filled`` fills
the cut-out pixels with texture pixels drawn from the flat ones, so the cut draws no
outline of zeros. Before training, the run
measures each option against the renderer's ground truth
(:func:`stexture.datasets.split_quality` on freshly rendered images: the donor texture
``T'`` and ``S' = x - T'``): the share of the donor's energy that is shape and the
material the donor still carries.

Run from the repository root::

    .venv/bin/python -m experiments.texture_layout.run            # 3 seeds, 15 epochs
    .venv/bin/python -m experiments.texture_layout.run --donor flat
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from experiments._benchcommon import machine_line, print_table
from stexture import decompose
from stexture.datasets import (
    CLASSES,
    image_rng,
    make_furniture_dataset,
    render_furniture,
    rendering_truth,
    split_quality,
    synthetic_rtv_params,
)
from stexture.imageio import read_rgb
from stexture.mixing import MixPlan, compose
from stexture.training.models import small_resnet
from stexture.training.stats import paired_t

CHANCE = 1 / len(CLASSES)
DONORS = ("whole", "flat", "filled")
#: A structure step (grey levels in [0, 1], mean over channels) above which the structure
#: is not flat: RTV's structure is piecewise smooth, its part and object edges step more.
FLAT_STEP = 0.02


def donor_mask(structure: np.ndarray, donor: str) -> np.ndarray:
    """Where a composite takes this image's texture (``HxWx1`` float32 0/1): everywhere
    (``whole``), or where the structure is flat (``flat``: not within one pixel of a step
    above ``FLAT_STEP``)."""
    if donor == "whole":
        return np.ones((*structure.shape[:2], 1), dtype=np.float32)
    grey = structure.mean(axis=2)
    step = np.zeros(grey.shape, dtype=np.float32)
    step[:, :-1] = np.abs(np.diff(grey, axis=1))
    step[:-1] = np.maximum(step[:-1], np.abs(np.diff(grey, axis=0)))
    edge = cv2.dilate((step > FLAT_STEP).astype(np.uint8), np.ones((3, 3), np.uint8))
    return (1 - edge)[:, :, None].astype(np.float32)


def donor_texture(structure: np.ndarray, texture: np.ndarray, donor: str) -> np.ndarray:
    """The texture a composite would take from this image: :func:`donor_mask` times the
    texture, and for ``filled`` the cut-out pixels refilled with texture pixels drawn at
    random from the flat ones (so the cut leaves no outline of zeros)."""
    mask = donor_mask(structure, "flat" if donor == "filled" else donor)
    kept = texture * mask
    if donor == "filled":
        flat = mask[:, :, 0] > 0
        holes = ~flat
        if flat.any() and holes.any():
            # a fixed stream per image content: the same image gets the same fill
            rng = np.random.default_rng(int(holes.sum()) * 7919 + int(flat.sum()))
            pool = texture[flat]
            kept[holes] = pool[rng.integers(len(pool), size=int(holes.sum()))]
    return kept


def donor_quality(size: int, per_class: int, donor: str) -> dict[str, float]:
    """Mean split measures of the donor texture on rendered images (ground truth known).

    The donor ``T' = m T`` (``m`` the donor mask) is measured against the material it
    could carry, ``m M`` (and the shape ``x - m M``), so cutting the texture out near
    edges is not read as shape; the material it gives up is its own column,
    ``||m M||^2 / ||M||^2``."""
    measures, shares = [], []
    for name in CLASSES:
        for index in range(per_class):
            r = render_furniture(name, image_rng(0, "donor", name, index), size, 0.0,
                                 layers=True)
            x = r.image.astype(np.float32) / 255.0
            structure, texture = decompose(r.image, "rtv", **synthetic_rtv_params(size))
            mask = donor_mask(structure, "flat" if donor == "filled" else donor)
            kept = donor_texture(structure, texture, donor)
            _, material = rendering_truth(r)
            reachable = material * mask
            shares.append(float((reachable**2).sum() / (material**2).sum()))
            measures.append(split_quality(x - kept, kept, x - reachable, reachable,
                                          r.surfaces, r.object_mask, band=2))
    return {"material under the mask": float(np.mean(shares)),
            "of it in the donor (1 - a)":
            1 - float(np.mean([q.material_in_structure for q in measures])),
            "shape share of the donor's energy":
            float(np.mean([q.shape_in_texture for q in measures])),
            "shape at the silhouette":
            float(np.mean([q.shape_sources["silhouette"] for q in measures]))}


def texture_layers(root: Path, split: str, size: int,
                   donor: str = "whole") -> tuple[torch.Tensor, torch.Tensor]:
    """(textures ``N x 3 x S x S`` in [-1, 1], labels) of a split, by RTV."""
    textures, labels = [], []
    for cls, name in enumerate(CLASSES):
        for path in sorted((root / split / name).glob("*.jpg")):
            image = read_rgb(path)
            structure, texture = decompose(image, "rtv", **synthetic_rtv_params(size))
            texture = donor_texture(structure, texture, donor)
            textures.append(torch.from_numpy(texture).permute(2, 0, 1))
            labels.append(cls)
    return torch.stack(textures), torch.tensor(labels)


def laid_out(textures: torch.Tensor, layout: str, tile: int, seed: int) -> torch.Tensor:
    """``0.5 + P(t)`` per image: the texture alone, aligned or tile-shuffled."""
    n, _, height, width = textures.shape
    index = torch.arange(n)
    tiles = None
    if layout == "shuffled":
        count = (height // tile) * (width // tile)
        g = torch.Generator().manual_seed(seed)
        tiles = torch.stack([torch.randperm(count, generator=g) for _ in range(n)])
    plan = MixPlan(index, index, torch.ones(n, dtype=torch.bool), tiles, tile)
    grey = torch.full_like(textures, 0.5)
    return compose(grey, textures, plan)  # own texture as donor: x = 0.5 + P(t)


def train_and_test(train: tuple, test: tuple, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = small_resnet(len(CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    x, y = train
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=g).split(32):
            loss = torch.nn.functional.cross_entropy(model((x[batch] - 0.5) / 0.25), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model((xb - 0.5) / 0.25).argmax(1) for xb in test[0].split(256)])
    return float((predicted == test[1]).float().mean())


def interval(a: np.ndarray, b: np.ndarray, spec: str = "+.1f") -> str:
    """The paired 95% t interval of ``mean(a - b)`` over seeds, as text."""
    t = paired_t(a, b)
    if t["ci_low"] is None:
        return "n/a"
    return f"[{t['ci_low']:{spec}}, {t['ci_high']:{spec}}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=64, help="image side (px)")
    parser.add_argument("--tile", type=int, default=8, help="tile side of the shuffled layout")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--donor", choices=DONORS, default="whole",
                        help="the texture a composite takes: all of it, or where flat")
    parser.add_argument("--measure-per-class", type=int, default=4,
                        help="rendered images per class for the split measure of each donor")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.perf_counter()
    for donor in DONORS:
        quality = donor_quality(args.size, args.measure_per_class, donor)
        print(f"donor {donor}: " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()),
              flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "furniture"
        make_furniture_dataset(root, per_class=args.per_class,
                               test_per_class=args.test_per_class, shifted_per_class=1,
                               size=args.size, texture_correlation=0.0, progress=False)
        train = texture_layers(root, "train", args.size, args.donor)
        test = texture_layers(root, "test", args.size, args.donor)
    accuracy = {layout: [] for layout in ("aligned", "shuffled")}
    for seed in range(args.seeds):
        for layout in accuracy:
            data_train = (laid_out(train[0], layout, args.tile, 2 * seed), train[1])
            data_test = (laid_out(test[0], layout, args.tile, 2 * seed + 1), test[1])
            accuracy[layout].append(train_and_test(data_train, data_test, args.epochs, seed))
            print(f"seed {seed} {layout}: {100 * accuracy[layout][-1]:.1f}%", flush=True)
    rows = []
    for layout, values in accuracy.items():
        v = 100 * np.array(values)
        rows.append([layout, f"{v.mean():.1f}", interval(v, np.zeros_like(v), ".1f"),
                     " ".join(f"{a:.1f}" for a in v)])
    aligned, shuffled = (100 * np.array(accuracy[k]) for k in ("aligned", "shuffled"))
    print(machine_line())
    print(f"{len(CLASSES)} classes, texture_correlation 0, {args.size} px, "
          f"{args.per_class} train / {args.test_per_class} test images per class, tile "
          f"{args.tile} px, donor {args.donor}, small ResNet, {args.epochs} epochs, "
          f"{args.seeds} seeds; chance "
          f"{100 * CHANCE:.1f}%; {time.perf_counter() - start:.0f} s")
    print_table(["texture layout", "test accuracy %", "95% CI over seeds", "per seed"], rows)
    print(f"aligned - shuffled: {(aligned - shuffled).mean():+.1f} points, paired 95% CI "
          f"{interval(aligned, shuffled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
