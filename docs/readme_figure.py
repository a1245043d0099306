"""Draw the README's picture: image | structure | texture | cue-conflict composite.

    .venv/bin/python docs/readme_figure.py            # writes docs/_static/readme-figure.png

Two synthetic furniture photos (:func:`stexture.render_furniture`) are decomposed with the
parameters chosen for synthetic data, and each structure takes the other's texture by the
loader's own composition; the composite's title is its soft label at k = 0.8. Deterministic
(seeded), so a rerun changes the file only when the code that draws it changes.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "_static" / "readme-figure.png"
CLASSES = ("chair", "sofa")
SIZE, K, SEED = 128, 0.8, 3


def draw(out: Path = OUT) -> Path:
    """Write the figure to ``out`` (PNG) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import stexture
    from stexture.datasets import synthetic_rtv_params
    from stexture.imageio import texture_to_display
    from stexture.mixing import MixPlan, compose

    rng = np.random.default_rng(SEED)
    images = np.stack([stexture.render_furniture(c, rng, size=SIZE).image for c in CLASSES])
    structure, texture = stexture.decompose(images, **synthetic_rtv_params(SIZE))
    donor = torch.tensor([1, 0])
    plan = MixPlan(torch.tensor([0, 1]), donor, torch.ones(2, dtype=torch.bool))
    chw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    mixed = compose(chw(structure), chw(texture), plan).permute(0, 2, 3, 1).numpy()

    fig, axes = plt.subplots(len(CLASSES), 4, figsize=(8, 4.3), dpi=80)
    for i, row in enumerate(axes):
        a, b = CLASSES[i], CLASSES[int(donor[i])]
        titles = (f"image ({a})", "structure", "texture",
                  f"composite: {K:g} {a} / {1 - K:.1f} {b}")
        pictures = (images[i], structure[i], texture_to_display(texture[i]), mixed[i])
        for ax, picture, title in zip(row, pictures, titles, strict=True):
            ax.imshow(np.clip(picture, 0, 255 if picture.dtype == np.uint8 else 1))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    # 256 colours: a third of the bytes of the full-colour PNG (under 200 kB, small enough
    # to commit), with no visible change at this size
    picture = Image.open(buffer).convert("RGB").quantize(256, Image.Quantize.MEDIANCUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, optimize=True)
    return out


def main() -> None:
    """Command line: ``--out PATH`` (default docs/_static/readme-figure.png)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    path = draw(parser.parse_args().out)
    print(f"{path} ({path.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
