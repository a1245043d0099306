"""PyTorch loaders over stexture shards: cue-conflict training batches and evaluation sets.

:func:`make_loader` returns a ``torch.utils.data.DataLoader`` over every sample of a split,
read by offset from the shards (:mod:`.index`): each epoch is one global permutation split
exactly across ranks (:mod:`.sampler`); each sample is cropped with the random-resized crop
applied to its image and structure layer alike (:mod:`.crops`); each batch is mixed into
cue-conflict samples with soft labels by :class:`~stexture.mixing.CueConflictMix`
(:mod:`.train`). :func:`make_eval_loader` reads a split in a fixed order, clean or as a fixed
cue-conflict set (the shape-bias metric of Geirhos et al., ICLR 2019; :mod:`.evaluation`).

The mixing plan of a batch is drawn before the structure layers are decoded, and only the
structures it needs are decoded (those of the composites and their donors): decoding the
structure layer is the loader's main cost beyond what a plain image pipeline does.
"""

from .batch import IMAGENET_MEAN, IMAGENET_STD
from .crops import center_crop_box, crop_layers, random_resized_crop_box
from .dataloader import CueConflictLoader, make_eval_loader, make_loader
from .index import CorruptSampleWarning

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CorruptSampleWarning",
    "CueConflictLoader",
    "center_crop_box",
    "crop_layers",
    "make_eval_loader",
    "make_loader",
    "random_resized_crop_box",
]
