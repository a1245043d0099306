"""SweepConfig: one frozen, validated object for a sweep's settings; the `stexture sweep`
options come from its fields, and sweep.json round-trips through it."""

import argparse
import ast
import dataclasses
import json
from pathlib import Path

import pytest

from stexture.cli import build_parser
from stexture.commands.sweep import add_config_arguments, config_from_args
from stexture.training import SweepConfig, ray_tune
from stexture.training.config import RUN_GRID
from stexture.training.runner import sweep

# the keys sweep.json has had since the teachers' student: a resumed sweep compares them
SETTINGS_KEYS = [
    "shards", "train_fraction", "trainer", "epochs", "model", "image_size", "batch_size", "lr",
    "weight_decay", "optimizer", "warmup_fraction", "label_smoothing", "patience",
    "p_conflict", "pairing", "min_scale", "mode", "alpha", "texture_layout", "tile_size",
    "aux_bn", "student", "temperature", "match_steps", "balance_classes", "init_weights",
]  # (hard_weight, labels and label_set are recorded only when set: older folders resume)


def _config_parser():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser


def test_every_field_is_an_option_whose_default_is_the_fields():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in sub.choices["sweep"]._actions}
    for setting in dataclasses.fields(SweepConfig):
        action = actions[setting.name]
        assert action.default == setting.default, setting.name
        assert action.help.startswith(setting.metadata["help"]), setting.name
    args = parser.parse_args(["sweep", "shards/"])
    assert config_from_args(args) == SweepConfig()


def test_typed_options_reach_the_config():
    args = _config_parser().parse_args([
        "--k", "0,0.5", "--seeds", "2", "--patience", "0", "--no-baseline", "--no-ensemble",
        "--no-match-steps", "--mode", "add", "--matched-baseline", "--aux-bn",
        "--warmup-fraction", "0.1", "--pairing", "random", "--init-weights", "w.pt"])
    config = config_from_args(args)
    assert config == SweepConfig(
        k_values=(0.0, 0.5), seeds=2, patience=None, baseline=False, ensemble=False,
        match_steps=False, mode="add", matched_baseline=True, aux_bn=True,
        warmup_fraction=0.1, pairing="random", init_weights="w.pt")
    assert config_from_args(_config_parser().parse_args(["--patience", "4"])).patience == 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"k_values": []}, "empty"),
    ({"k_values": "0,2"}, r"\[0, 1\]"),
    ({"seeds": 0}, "seeds must be >= 1"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"patience": 0}, "patience must be >= 1"),
    ({"optimizer": "adam"}, "unknown optimizer"),
    ({"model": "vgg"}, "unknown model"),
    ({"image_size": 4}, "image_size >= 8"),
    ({"train_fraction": 0.0}, r"train fraction must lie in \(0, 1\]"),
    ({"p_conflict": 1.5}, "p_conflict"),
    ({"pairing": "nearest"}, "unknown pairing"),
    ({"min_scale": 0.0}, "min_scale"),
    ({"mode": "mix"}, "unknown mode"),
    ({"alpha": -0.1}, "alpha"),
    ({"texture_layout": "tiled"}, "unknown texture_layout"),
    ({"tile_size": 0}, "tile_size"),
    ({"student": "teacher"}, "unknown student"),
    ({"temperature": 0.0}, "temperature"),
    ({"student": "teachers", "aux_bn": True}, "no aux_bn"),
    ({"matched_baseline": True}, "mode='add'"),
])
def test_bad_settings_fail_in_the_config_before_anything_is_read_or_written(
        tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(**settings)
    # the shards do not exist: the config's error comes first, and nothing is written
    with pytest.raises(ValueError, match=message):
        sweep(tmp_path / "no-shards", SweepConfig(**settings), out=tmp_path / "runs", log=None)
    assert list(tmp_path.iterdir()) == []


def test_settings_that_need_the_builtin_trainer_fail_with_a_train_fn():
    for settings, message in (({"aux_bn": True}, "aux_bn is for the built-in trainer"),
                              ({"student": "teachers"}, "no train_fn"),
                              ({"init_weights": "w.pt"}, "init_weights is for the built-in")):
        config = SweepConfig(**settings)
        config.check_train_fn(False)
        with pytest.raises(ValueError, match=message):
            config.check_train_fn(True)


def test_the_config_is_frozen_and_normalised():
    config = SweepConfig(k_values="0, 1", seeds=[3, 5], init_weights="w.pt")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    assert config.k_values == (0.0, 1.0) and config.seed_list == [3, 5]
    assert config == SweepConfig(k_values=[0, 1], seeds=(3, 5), init_weights="w.pt")
    assert hash(config) == hash(SweepConfig(k_values=(0.0, 1.0), seeds=[3, 5],
                                            init_weights="w.pt"))
    assert SweepConfig(seeds=2).seed_list == [0, 1]
    assert config.train_config(seed=7).seed == 7


def test_sweep_json_round_trips_through_the_config(tmp_path):
    config = SweepConfig(k_values=(0.2, 0.8), seeds=(1, 4), train_fraction=0.4, mode="add",
                         alpha=0.5, texture_layout="shuffled", tile_size=8, aux_bn=True,
                         matched_baseline=True, patience=None, baseline=False,
                         init_weights=tmp_path / "w.pt")
    settings = json.loads(json.dumps(config.to_settings(tmp_path / "shards", "builtin")))
    assert list(settings) == SETTINGS_KEYS
    assert settings["shards"] == str((tmp_path / "shards").resolve())
    assert (settings["mode"], settings["tile_size"], settings["patience"]) == ("add", 8, None)
    assert not set(RUN_GRID) & set(settings)  # a finished sweep can take more seeds or k values
    assert SweepConfig.from_settings(settings, **config.run_grid()) == config
    assert SweepConfig.from_settings(settings).k_values == SweepConfig().k_values
    with pytest.raises(ValueError, match="missing \\['epochs'\\]"):
        SweepConfig.from_settings({k: v for k, v in settings.items() if k != "epochs"})
    with pytest.raises(ValueError, match="unknown \\['speed'\\]"):
        SweepConfig.from_settings({**settings, "speed": 2})


def test_the_sweep_takes_its_settings_as_one_config(tmp_path):
    """One style (issue 21): ``sweep(shards, SweepConfig(...), out=...)``; a k grid where the
    config goes, or a setting as a keyword, is a ``TypeError`` before anything is read."""
    with pytest.raises(TypeError, match=r"second argument is a SweepConfig, got list"):
        sweep(tmp_path / "s", [0.0, 1.0], out=tmp_path / "x", log=None)
    with pytest.raises(TypeError, match="epochs"):
        sweep(tmp_path / "s", SweepConfig(), epochs=2, out=tmp_path / "x", log=None)
    assert list(tmp_path.iterdir()) == []


def test_ray_tune_takes_the_runs_from_the_runs_module_not_from_sweep():
    tree = ast.parse(Path(ray_tune.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "runs" in imported and not any("sweep" in (name or "") for name in imported)
