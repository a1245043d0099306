"""Shards of decomposed images: the format, the writer (plan / write / output), the driver
loop and its local and Ray engines, validation, and reading them with webdataset, wids or
Hugging Face ``datasets`` (:mod:`.interop`). See :mod:`.format` for what a shard holds."""

from .engine import DecomposeFailed, DecomposeInterrupted
from .format import (
    DecodedSample,
    Manifest,
    ShardInfo,
    decode_sample,
    decode_structure,
    read_manifest,
    texture_of,
)
from .interop import add_texture, hf_dataset, layer_dict, wds_handlers
from .local import write_dataset
from .output import Summary, assemble_manifest, finish_dataset
from .plan import Plan, Settings, ShardJob, plan_dataset
from .ray_engine import write_dataset_ray
from .sources import list_sources
from .validate import Validation, contact_sheet, validate_dataset
from .write import ShardResult, iter_pending, open_output, record_shard, write_shard

__all__ = [
    "DecodedSample",
    "DecomposeFailed",
    "DecomposeInterrupted",
    "Manifest",
    "Plan",
    "Settings",
    "ShardInfo",
    "ShardJob",
    "ShardResult",
    "Summary",
    "Validation",
    "add_texture",
    "assemble_manifest",
    "contact_sheet",
    "decode_sample",
    "decode_structure",
    "finish_dataset",
    "hf_dataset",
    "iter_pending",
    "layer_dict",
    "list_sources",
    "open_output",
    "plan_dataset",
    "read_manifest",
    "record_shard",
    "texture_of",
    "validate_dataset",
    "wds_handlers",
    "write_dataset",
    "write_dataset_ray",
    "write_shard",
]
