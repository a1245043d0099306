"""The public names of ``stexture`` and ``stexture.shards``, pinned: a name added to or taken
from the API is a decision, made here on purpose, not a side effect of an import."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "stexture": [
        "METHODS",
        "CudaUnavailableError",
        "CueConflictMix",
        "Method",
        "MixConfig",
        "__version__",
        "cuda_available",
        "decompose",
        "get_method",
        "label_shards",
        "make_eval_loader",
        "make_furniture_dataset",
        "make_loader",
        "read_label_set",
        "render_furniture",
        "resolve_device",
        "run_demo",
        "shape_bias",
        "split_quality",
        "sweep",
    ],
    "stexture.shards": [
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
    ],
}

# what stexture.shards exported before issue 21 and now leaves to its modules: the writer's
# engine internals, imported by the engines from where they are defined
INTERNAL = {
    "stexture.shards.plan": ["Plan", "ShardJob", "plan_dataset"],
    "stexture.shards.write": ["ShardResult", "iter_pending", "open_output", "record_shard",
                              "write_shard"],
    "stexture.shards.output": ["assemble_manifest", "finish_dataset"],
    "stexture.shards.format": ["ShardInfo", "decode_structure"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_the_public_names_are_pinned_and_resolve(module):
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(PUBLIC[module])
    for name in imported.__all__:
        assert getattr(imported, name) is not None, name


@pytest.mark.parametrize("module", sorted(INTERNAL))
def test_the_internals_stay_importable_from_their_modules(module):
    imported = importlib.import_module(module)
    for name in INTERNAL[module]:
        assert hasattr(imported, name), name
        assert name not in importlib.import_module("stexture.shards").__all__
