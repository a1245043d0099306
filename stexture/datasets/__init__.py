"""A synthetic furniture dataset: the built-in demo data of stexture.

Eight classes (:data:`CLASSES`) are drawn procedurally from parametric parts in a
room-like scene. Each object's surfaces get a material (:data:`MATERIALS`): with
probability ``texture_correlation`` its class's typical one (:data:`TYPICAL_MATERIALS`),
otherwise any. So texture is a useful but imperfect cue and shape a reliable but harder
one, which is what cue-conflict training with soft labels is meant to balance.

``make_furniture_dataset`` writes an ImageFolder tree (``train``, ``test`` and a
``test_shifted`` split with texture_correlation 0); ``render_furniture`` draws one image;
``make_cue_conflict_split`` renders cue-conflict images directly (class a's shape in class
b's typical material: the oracle of the decomposition).

Ground truth for a shape/material split: ``render_furniture(..., layers=True)`` also draws
the image's shape image (every surface's pattern replaced by its mean colour; geometry,
shading, shadows and lighting kept) and material layer (image minus shape), and
``split_quality`` measures a structure/texture split against them. Patterns and seams have
a physical scale, so an image at 64 px looks like the 128 px one downsampled.
"""

from .furniture import CLASSES, TYPICAL_MATERIALS
from .generate import (
    SPLITS,
    DatasetSummary,
    image_rng,
    make_cue_conflict_split,
    make_furniture_dataset,
    synthetic_rtv_params,
)
from .materials import MATERIALS
from .scene import MIN_SIZE, Rendering, encode_jpeg, render_furniture
from .split_quality import SplitQuality, rendering_truth, split_quality

__all__ = [
    "CLASSES",
    "MATERIALS",
    "MIN_SIZE",
    "SPLITS",
    "TYPICAL_MATERIALS",
    "DatasetSummary",
    "Rendering",
    "SplitQuality",
    "encode_jpeg",
    "image_rng",
    "make_cue_conflict_split",
    "make_furniture_dataset",
    "render_furniture",
    "rendering_truth",
    "split_quality",
    "synthetic_rtv_params",
]
