"""One definition of the mixing settings: :class:`MixConfig`, taken by ``CueConflictMix``,
``make_loader(mix=...)`` and ``SweepConfig``, whose command-line options come from it."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest
import torch
from shardfactory import make_shard_dir

from stexture import make_loader
from stexture.commands.sweep import add_config_arguments
from stexture.mixing import CueConflictMix, MixConfig
from stexture.training.config import SweepConfig

SETTINGS = {"p_conflict": 0.75, "pairing": "random", "texture_scale": 0.5,
            "label_smoothing": 0.1, "mode": "add", "alpha": 0.5,
            "texture_layout": "shuffled", "tile_size": 4}


@pytest.mark.parametrize(("name", "value"), [
    ("p_conflict", 1.5), ("pairing", "nearest"), ("texture_scale", float("nan")),
    ("label_smoothing", 1.0), ("mode", "concat"), ("alpha", -0.1),
    ("texture_layout", "tiled"), ("tile_size", 0)])
def test_a_bad_setting_is_a_value_error_naming_it(name, value):
    with pytest.raises(ValueError, match=name):
        MixConfig(**{name: value})


def test_equal_settings_of_other_number_types_are_equal_configs():
    assert MixConfig(p_conflict=1, alpha=1, tile_size=8.0) == MixConfig(
        p_conflict=1.0, alpha=1.0, tile_size=8)


def test_the_mix_takes_a_config_or_its_fields_alike():
    config = MixConfig(**SETTINGS)
    by_config, by_fields = CueConflictMix(3, 0.8, config), CueConflictMix(3, 0.8, **SETTINGS)
    assert by_config.config == by_fields.config == config
    assert repr(by_config) == repr(by_fields)
    assert all(getattr(by_config, f.name) == getattr(config, f.name) for f in fields(config))
    # a field given beside a config replaces the config's
    assert CueConflictMix(3, 0.8, config, mode="replace").config.mode == "replace"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("mix"), per_class=4, val_per_class=1,
                          size=16)


def test_make_loader_keywords_and_mix_give_the_same_config_and_batches(shards):
    common = {"k": 0.7, "batch_size": 4, "image_size": 16, "seed": 3, "with_info": True}
    by_keywords = make_loader(shards, **common, **SETTINGS)
    by_config = make_loader(shards, **common, mix=MixConfig(**SETTINGS))
    assert by_keywords.collate_fn.mix.config == by_config.collate_fn.mix.config == MixConfig(
        **SETTINGS)
    for (x1, y1, info1), (x2, y2, info2) in zip(by_keywords, by_config, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(info1["is_conflict"], info2["is_conflict"])


def test_make_loader_refuses_a_keyword_set_beside_mix(shards):
    with pytest.raises(ValueError, match="not both: mode, alpha"):
        make_loader(shards, k=0.5, mix=MixConfig(), mode="add", alpha=0.5)
    with pytest.raises(ValueError, match="tile_size"):  # checked before any shard is read
        make_loader(shards / "missing", k=0.5, mix=MixConfig(tile_size=0))


def test_the_sweep_config_takes_its_mix_fields_from_mix_config():
    mix_fields = {f.name: f for f in fields(MixConfig)}
    # the sweep's label_smoothing is the trainer's (TrainConfig), not the loader's
    shared = [f for f in fields(SweepConfig) if f.name in mix_fields
              and f.name != "label_smoothing"]
    assert {f.name for f in shared} == {"p_conflict", "pairing", "mode", "alpha",
                                        "texture_layout", "tile_size"}
    for setting in shared:
        assert setting.default == mix_fields[setting.name].default
        assert setting.metadata == mix_fields[setting.name].metadata
    config = SweepConfig(mode="add", alpha=0.5, texture_layout="shuffled", tile_size=8)
    assert config.mix == MixConfig(mode="add", alpha=0.5, texture_layout="shuffled",
                                   tile_size=8)
    with pytest.raises(ValueError, match="texture_layout"):
        SweepConfig(texture_layout="tiled")


def test_the_sweep_options_are_made_from_mix_config_metadata():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    actions = {action.dest: action for action in parser._actions}
    for name in ("p_conflict", "pairing", "mode", "alpha", "texture_layout", "tile_size"):
        meta = MixConfig.__dataclass_fields__[name].metadata
        assert actions[name].help == meta["help"]
        assert actions[name].choices == meta.get("choices")
    assert parser.parse_args(["--texture-layout", "shuffled"]).texture_layout == "shuffled"
