"""
The effect of ``lam`` and ``sigma`` (RTV)
=========================================

Relative Total Variation has two main knobs. ``lam`` weighs smoothness against fidelity:
larger values flatten more of the image into the texture layer. ``sigma`` is the scale
(in pixels) of the window over which RTV tells texture from structure: edges shorter than
about ``sigma`` count as texture. The grid shows the structure layer of the coffee
photo (``skimage.data.coffee`` at 256 px) for three values of each; the default is ``lam=0.01,
sigma=3``. See :func:`stexture.smoothing.rtv.rtv_smooth` for every parameter.
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data, transform

import stexture

image = transform.resize(data.coffee(), (192, 256), anti_aliasing=True).astype(np.float32)
lams = (0.003, 0.01, 0.03)
sigmas = (1.0, 3.0, 6.0)

fig, axes = plt.subplots(len(lams), len(sigmas), figsize=(10, 6.2))
for i, lam in enumerate(lams):
    for j, sigma in enumerate(sigmas):
        structure, texture = stexture.decompose(image, method="rtv", lam=lam, sigma=sigma)
        ax = axes[i, j]
        ax.imshow(np.clip(structure, 0, 1))
        ax.set_title(f"lam={lam}, sigma={sigma:g}\ntexture energy {np.abs(texture).mean():.3f}",
                     fontsize=9)
        ax.axis("off")
fig.suptitle("RTV structure layer (coffee, 256 px)")
fig.tight_layout()
plt.show()
