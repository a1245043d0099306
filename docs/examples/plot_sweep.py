"""
A sweep over k, from a tiny run
===============================

The whole loop on a toy scale: synthetic furniture photos
(:func:`stexture.make_furniture_dataset`), decomposed into shards
(:func:`stexture.shards.write_dataset`), and a sweep (:func:`stexture.sweep`, its settings
one :class:`~stexture.training.SweepConfig`) that trains one small model per label weight
k (here 0, 0.5 and 1) plus a vanilla baseline, then judges each on clean validation
accuracy and shape bias (:func:`stexture.shape_bias`). Shape bias should rise with k: at
k = 1 the label follows the structure only. At this size (4 classes of 24 training images,
32 px, 6 epochs, one seed) the differences are noise; the point is what a sweep gives you.
``stexture sweep`` writes the same ``summary.json`` and its own ``sweep.png``.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

import stexture
from stexture.datasets import synthetic_rtv_params
from stexture.shards import ShardSettings, write_dataset
from stexture.training import SweepConfig

SIZE = 32
work = Path(tempfile.mkdtemp(prefix="stexture-gallery-"))
stexture.make_furniture_dataset(work / "photos", classes=("chair", "sofa", "table", "lamp"),
                                per_class=32, test_per_class=0, shifted_per_class=0,
                                size=SIZE, progress=False)
settings = ShardSettings(method="rtv", params=synthetic_rtv_params(SIZE), size=SIZE,
                         val_fraction=0.25, shard_size=32)
write_dataset(work / "photos" / "train", work / "shards", settings, show_progress=False,
              log=lambda line: None)
config = SweepConfig(k_values=(0.0, 0.5, 1.0), seeds=1, epochs=6, patience=6,
                     model="small", image_size=SIZE, batch_size=32, ensemble=False)
summary = stexture.sweep(work / "shards", config, out=work / "runs", device="cpu",
                         log=print, verbose=False)

# one bar per arm: clean accuracy and shape bias (mean over seeds) from the summary
arms = [(f"k = {row['k']:g}", row) for row in summary["per_k"]]
arms.append(("vanilla", summary["vanilla"]))
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, metric in zip(axes, ("clean_acc", "shape_bias"), strict=True):
    ax.bar([name for name, _ in arms], [row[metric]["mean"] or 0 for _, row in arms],
           color=["#4878a8"] * (len(arms) - 1) + ["#999999"])
    ax.set_ylim(0, 1)
    ax.set_title(metric.replace("_", " "))
fig.suptitle(f"tiny sweep: {len(summary['classes'])} classes, {SIZE} px, one seed")
fig.tight_layout()
plt.show()
