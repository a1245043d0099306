"""Soft-label sidecars: the ``s`` and ``t`` label maps of every sample, beside the shards.

The furniture report trained on ``y = k s + (1 - k) t``, with ``s`` a structure-biased and
``t`` a texture-biased model's label of the image. ``stexture label`` writes those labels
once (:mod:`stexture.training.soft_labels`); the loader pools and mixes them for each crop
(``make_loader(..., labels="soft", k=...)``). The shards are never rewritten: the labels go
into a *sidecar*, a second WebDataset shard set with the same keys.

Layout, for a sidecar called ``NAME`` of a shard folder ``ROOT``::

    ROOT/labels-NAME/manifest.json       what made the labels (below)
    ROOT/labels-NAME/train-000000.tar    one sidecar shard per shard, same name, same keys
    ROOT/labels-NAME/progress.json       while (or after) writing: what is done, resumable
    ROOT/labels-NAME/models/*.pt         cross-fitted teachers (trained by ``stexture label``)

Each sample of a sidecar shard holds, as NumPy ``.npy`` members (format 1.0, no pickles):

``s.npy``, ``t.npy``
    ``G x G x K`` float16: class probabilities on a ``G x G`` grid over the whole image
    (cell ``(i, j)`` covers rows ``[i H / G, (i + 1) H / G)`` and columns likewise), from
    the structure model on the structure layer (``s``) and the texture model on the texture
    layer (``t``). ``K = C`` (the class count; every row of a cell sums to 1 within fp16) or,
    for many classes, the ``K`` most probable classes of each cell, largest first.
``s.idx.npy``, ``t.idx.npy``
    only with top-k: ``G x G x K`` int16, the class index of each value.

webdataset, wids and Hugging Face ``datasets`` decode ``.npy`` members with their own
default handlers (``np.load``), so they read the labels as they are; join them to the
shards' samples by ``__key__``. :func:`decode_label_sample` is stexture's own reader.

``labels-NAME/manifest.json`` has the fields of a shard manifest (``classes``, ``splits``
with every sidecar shard's name, count and SHA-256, ``method`` ``"soft-labels"`` and
``params``), so :func:`~stexture.shards.format.read_manifest` reads and checks it, and
adds ``labels``: the grid, top-k, dtype, temperature, the teachers (how they were made and
the SHA-256 of their weights, one per fold), the folds and their rule, and ``source``: the
SHA-256 of every shard the labels were made from. The shard folder's own ``manifest.json``
names the sidecar under ``labels`` (``{NAME: {"folder", "sha256"}}``).

Pooling over a crop (:func:`pool_label_map`): for a crop box ``(top, left, h, w)`` of an
``H x W`` image, each cell is weighted by the area it shares with the box, the cells'
log-probabilities are averaged with those weights and a softmax makes the label (an
area-weighted geometric mean of the cells' distributions, normalised). A cell's
log-probabilities are the teacher's ``logits / T`` up to a constant, which the softmax
removes, so this pools the teacher's logits over the crop, as ReLabel pools its scores
before the softmax: for a model whose head is global average pooling and a linear layer,
that is the model's output on the average of the crop's cell features. It came closer to
the teacher applied to the crop itself than the arithmetic mean of the cells'
probabilities (total variation 0.085 against 0.149 on the synthetic furniture, README
"Choosing k"). A horizontal flip of the crop does not change the label: the flip moves
pixels inside the box, and the pooled label is a class distribution with no position in it
(the box is taken before the flip).
"""

from __future__ import annotations

# the "X as X" imports are not in __all__ but stay importable from here (LABELS_VERSION:
# the writer, training/soft_labels.py, and format/manifest.py)
from .check import check_label_set, check_label_sets
from .check import iter_label_samples as iter_label_samples
from .label_set import LabelSet, label_set_names, read_label_set, register_label_set
from .layout import LABEL_LAYERS, LABELS_FORMAT, METHOD, PROGRESS_NAME, label_folder
from .layout import LABELS_VERSION as LABELS_VERSION
from .layout import index_field as index_field
from .layout import value_field as value_field
from .members import (
    compress_probabilities,
    decode_label_sample,
    decode_npy,
    encode_label_sample,
    encode_npy,
)
from .pool import mix_soft_labels, pool_label_map
from .reader import SoftLabelReader

__all__ = [
    "LABELS_FORMAT",
    "LABEL_LAYERS",
    "METHOD",
    "PROGRESS_NAME",
    "LabelSet",
    "SoftLabelReader",
    "check_label_set",
    "check_label_sets",
    "compress_probabilities",
    "decode_label_sample",
    "decode_npy",
    "encode_label_sample",
    "encode_npy",
    "label_folder",
    "label_set_names",
    "mix_soft_labels",
    "pool_label_map",
    "read_label_set",
    "register_label_set",
]
