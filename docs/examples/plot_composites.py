"""
Cue-conflict composites and their soft labels
=============================================

A cue-conflict composite is the structure of one image plus the texture of another,
labelled ``y = k * onehot(class_a) + (1 - k) * onehot(class_b)``. Here four synthetic
furniture photos (:func:`stexture.render_furniture`, each class with its typical material)
are decomposed with the parameters the split study chose for synthetic data
(:func:`stexture.datasets.synthetic_rtv_params`), and each structure is combined with the
texture of the next photo by the loader's own composition
(:func:`stexture.mixing.compose`); the titles give the soft target at ``k = 0.8``
(:func:`stexture.mixing.soft_targets`).
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

import stexture
from stexture.datasets import CLASSES, synthetic_rtv_params
from stexture.imageio import texture_to_display
from stexture.mixing import MixPlan, compose, soft_targets

SIZE, K = 96, 0.8
names = ["chair", "sofa", "table", "lamp"]
rng = np.random.default_rng(3)
images = np.stack([stexture.render_furniture(n, rng, size=SIZE).image for n in names])
structure, texture = stexture.decompose(images, **synthetic_rtv_params(SIZE))  # a batch

n = len(names)
donor = torch.tensor([(i + 1) % n for i in range(n)])
plan = MixPlan(torch.arange(n), donor, torch.ones(n, dtype=torch.bool))
to_chw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
mixed = compose(to_chw(structure), to_chw(texture), plan).permute(0, 2, 3, 1).numpy()
labels = torch.tensor([CLASSES.index(c) for c in names])
y = soft_targets(labels, labels[donor], K, num_classes=len(CLASSES))

fig, axes = plt.subplots(n, 4, figsize=(8.4, 2.2 * n))
for i, row in enumerate(axes):
    a, b = names[i], names[int(donor[i])]
    label = " / ".join(f"{y[i, CLASSES.index(c)]:.1f} {c}" for c in (a, b))
    pictures = (images[i], structure[i], texture_to_display(texture[i]), mixed[i])
    titles = (a, "structure", "texture", f"composite: {label}")
    for ax, picture, title in zip(row, pictures, titles, strict=True):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
fig.tight_layout()
plt.show()
