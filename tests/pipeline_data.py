"""Small image folders for the pipeline and inspect tests (crops of skimage textures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from stexture.shards.plan import ShardSettings

CLASSES = ("brick", "grass", "gravel")
# cheap but real decomposition: one outer RTV iteration, loose solve
FAST_PARAMS = {"n_iter": 1, "tol": 0.1}
FAST_ARGS = ["--method", "rtv", "--param", "n_iter=1", "--param", "tol=0.1", "--size", "24",
             "--min-side", "16", "--quiet"]


def fast_settings(**changes) -> ShardSettings:
    values = {"method": "rtv", "params": FAST_PARAMS, "size": 24, "min_side": 16,
              "shard_size": 3, "val_fraction": 0.25}
    return ShardSettings(**{**values, **changes})


def write_quietly(src, out, settings: ShardSettings | None = None, **kwargs):
    """``write_dataset`` with the fast settings, no progress bar and no log lines."""
    from stexture.shards.local import write_dataset

    return write_dataset(src, out, settings or fast_settings(), show_progress=False,
                         log=lambda line: None, **kwargs)


def texture_crop(name: str, index: int, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A distinct crop of skimage's ``name`` texture, as RGB."""
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    y, x = (index * 37) % (image.shape[0] - shape[0]), (index * 53) % (image.shape[1] - shape[1])
    return np.ascontiguousarray(image[y:y + shape[0], x:x + shape[1], :3])


def make_image_folder(root: Path, per_class: int = 4, classes=CLASSES) -> dict[str, str]:
    """``root/<class>/<n>/img_<i>.png``; returns {relative path: class}."""
    made = {}
    for name in classes:
        for i in range(per_class):
            relative = f"{name}/{i % 2}/img_{i}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(texture_crop(name, i)).save(root / relative)
            made[relative] = name
    return made
