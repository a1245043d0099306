"""The on-disk format of stexture shards: sample fields, layer encoding, manifest.

This package is the contract between the writer (``stexture.shards.write``), the reader and
``inspect`` (``stexture.shards``), and the loader (``stexture.loader``).

A shard is a WebDataset tar file ``{split}-{index:06d}.tar``. Each sample holds:

``__key__``
    stable, dot-free key derived from the source's relative path.
``jpg`` or ``png``
    the stored image, 8-bit RGB, exactly as written (its decoded pixels are the image).
``structure.dzst``
    the structure layer, 8-bit RGB: the method's float output rounded to 8 bits (so within
    0.5/255 of it), stored as a vertical delta compressed with Zstandard (see
    :func:`encode_structure` for the byte layout). Format version 3 stores it quantised to
    multiples of the writer's ``structure_step`` (in the manifest's settings; default 4):
    every decoded level is within ``structure_step // 2`` of the 8-bit layer; version 2
    stored it losslessly (step 1), and one reader takes both. Chosen by measurement for the
    loader, which decodes a structure layer for every cue-conflict sample: it decodes faster than
    lossless WebP and encodes faster, for somewhat more bytes (the figures are in
    ``benchmarks/README.md``, from ``benchmarks/bench_structure_codec.py``). Shards of
    format version 1 hold the structure as ``structure.webp`` (WebP lossless) instead; every
    reader accepts both, and a sample holds exactly one of them.
``cls``
    the integer class index (ASCII decimal); classes are sorted names, see the manifest.
``json``
    a record: ``source``, ``class_name``, ``size`` ([height, width]), ``method``, ``params``.

The texture is defined on the decoded layers: ``texture = image - structure`` (int16, in
[-255, 255], or divided by 255 as float32).

Beside the shards, ``manifest.json`` lists classes, splits, counts, every shard with its
sample count and SHA-256, the method and its parameters, and the versions that wrote them;
``index.csv`` has one row per sample (``key,split,shard,cls``); ``rejected.jsonl`` one line
per rejected input with its reason; ``{split}.offsets.json`` where each sample's members
lie in its shard, so that a loader starts without reading the shards (:mod:`.offsets`).

It is four modules: :mod:`.codecs` (the sample fields and their encodings), :mod:`.tar`
(writing a shard, reading its members, grouping them into samples), :mod:`.manifest`
(``manifest.json`` and ``index.csv``) and :mod:`.offsets` (the offsets file). The names of
the first three are re-exported here, and those of :mod:`.offsets` a reader needs.
"""

from __future__ import annotations

from .codecs import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FIELDS,
    LEGACY_STRUCTURE_FIELD,
    STRUCTURE_FIELD,
    STRUCTURE_FIELDS,
    DecodedSample,
    check_layer_size,
    decode_rgb,
    decode_sample,
    decode_structure,
    encode_image,
    encode_legacy_structure,
    encode_sample,
    encode_structure,
    structure_field,
    texture_of,
)
from .manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    MANIFEST_NAME,
    READABLE_VERSIONS,
    REJECTED_NAME,
    Manifest,
    ShardInfo,
    check_member_file_name,
    read_index,
    read_manifest,
    shard_name,
)
from .offsets import (
    OFFSETS_MANIFEST_KEY,
    SampleOffsetsError,
    offsets_name,
)
from .tar import (
    MAX_MEMBER_BYTES,
    group_samples,
    iter_tar_samples,
    read_tar_members,
    split_member_name,
    tar_member_offsets,
    write_tar,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IMAGE_FIELDS",
    "INDEX_NAME",
    "LEGACY_STRUCTURE_FIELD",
    "MANIFEST_NAME",
    "MAX_MEMBER_BYTES",
    "OFFSETS_MANIFEST_KEY",
    "READABLE_VERSIONS",
    "REJECTED_NAME",
    "STRUCTURE_FIELD",
    "STRUCTURE_FIELDS",
    "DecodedSample",
    "Manifest",
    "SampleOffsetsError",
    "ShardInfo",
    "check_layer_size",
    "check_member_file_name",
    "decode_rgb",
    "decode_sample",
    "decode_structure",
    "encode_image",
    "encode_legacy_structure",
    "encode_sample",
    "encode_structure",
    "group_samples",
    "iter_tar_samples",
    "offsets_name",
    "read_index",
    "read_manifest",
    "read_tar_members",
    "shard_name",
    "split_member_name",
    "structure_field",
    "tar_member_offsets",
    "texture_of",
    "write_tar",
]
