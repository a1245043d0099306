"""Shards of decomposed images: the format (:mod:`.format`: what a shard holds), the writer
(:mod:`.plan`, :mod:`.write`, :mod:`.output`), the driver loop (:mod:`.engine`) and its
local and Ray engines, validation, and reading shards with webdataset, wids or Hugging Face
``datasets`` (:mod:`.interop`).

Exported here is what a user of the shards needs: write a folder, check it, read its
manifest and samples. The writer's internals (the plan, its jobs and results, the progress
file and the manifest's assembly) are imported from their modules by the engines.
"""

from .engine import DecomposeFailed, DecomposeInterrupted
from .folder import ShardFolder
from .format import DecodedSample, Manifest, decode_sample, read_manifest, texture_of
from .interop import (
    add_texture,
    hf_dataset,
    layer_dict,
    wds_handlers,
    webdataset_urls,
    wids_use_fsspec,
)
from .local import write_dataset
from .output import WriteSummary
from .plan import ShardSettings
from .ray_engine import write_dataset_ray
from .sources import list_sources
from .validate import Validation, contact_sheet, validate_dataset

__all__ = [
    "DecodedSample",
    "DecomposeFailed",
    "DecomposeInterrupted",
    "Manifest",
    "ShardFolder",
    "ShardSettings",
    "Validation",
    "WriteSummary",
    "add_texture",
    "contact_sheet",
    "decode_sample",
    "hf_dataset",
    "layer_dict",
    "list_sources",
    "read_manifest",
    "texture_of",
    "validate_dataset",
    "wds_handlers",
    "webdataset_urls",
    "wids_use_fsspec",
    "write_dataset",
    "write_dataset_ray",
]
