"""
Decomposing a photo with each method
====================================

:func:`stexture.decompose` splits an image into a *structure* layer (an edge-preserving
smoothing: shapes and large shading) and a *texture* layer (the residual: fur, grain,
reflections), with ``structure + texture`` giving the image back. Here the cat photo that
scikit-image ships is split by each registered method (:data:`stexture.METHODS`) at its
defaults. The texture is shown offset to mid-grey, as ``stexture split`` writes it.
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data, transform

import stexture
from stexture.imageio import texture_to_display

image = data.chelsea()  # uint8, 300 x 451 x 3
image = (transform.rescale(image, 0.6, channel_axis=-1, anti_aliasing=True) * 255).astype(
    np.uint8)

fig, axes = plt.subplots(len(stexture.METHODS), 3, figsize=(9, 2.4 * len(stexture.METHODS)))
for row, name in zip(axes, sorted(stexture.METHODS), strict=True):
    structure, texture = stexture.decompose(image, method=name)
    error = np.abs(structure + texture - image / np.float32(255)).max()
    print(f"{name}: defaults {stexture.METHODS[name].defaults}, "
          f"max |structure + texture - image| = {error:.1e}")
    for ax, picture, title in zip(row, (image, structure, texture_to_display(texture)),
                                  ("image", f"{name}: structure", f"{name}: texture"), strict=True):
        ax.imshow(np.clip(picture, 0, 255 if picture.dtype == np.uint8 else 1))
        ax.set_title(title)
        ax.axis("off")
fig.tight_layout()
plt.show()
