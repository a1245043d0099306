import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from shardfactory import make_shard_dir

from stexture import cli
from stexture.shards.format import INDEX_NAME, read_manifest
from stexture.training.config import SweepConfig, parse_k_values
from stexture.training.models import small_resnet
from stexture.training.report import summarize
from stexture.training.runner import stratified_subset, sweep

CLASSES = ("armchair", "bed", "chair")


# one OpenMP thread per process: see the fixture in conftest.py
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("shards") / "s", classes=CLASSES,
                          per_class=6, val_per_class=2, size=32, shard_size=4)


def test_cli_sweep_runs_end_to_end_and_writes_every_output(shards, tmp_path, capsys):
    out = tmp_path / "runs"
    code = cli.main(["sweep", str(shards), "-v", "--k", "0,1", "--seeds", "1", "--epochs", "2",
                     "--out", str(out), "--device", "cpu", "--image-size", "32",
                     "--batch-size", "8", "--balance-classes"])
    assert code == 0
    names = ["vanilla-seed0", "k0-seed0", "k1-seed0", "ensemble-seed0"]
    for name in names:
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert 0.0 <= result["metrics"]["clean_acc"] <= 1.0
        assert result["metrics"]["conflict_n"] == 6  # every val pair has differing classes
    for name in names[:3]:
        result = json.loads((out / "runs" / name / "result.json").read_text())
        assert (out / "runs" / name / "best.pt").is_file()
        assert [h["epoch"] for h in result["history"]] == [1, 2]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == names
    assert {"acc_armchair", "acc_bed", "acc_chair", "shape_bias"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert [e["k"] for e in summary["per_k"]] == [0.0, 1.0]
    assert summary["best"]["k"] in (0.0, 1.0)
    assert summary["vanilla"]["clean_acc"]["n"] == 1
    assert summary["ensemble_k0_k1"] is not None
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| vanilla | 1 |" in report and "sweep.png" in report
    printed = capsys.readouterr().out
    assert "[4/4] ensemble-seed0" in printed and "epoch 2/2" in printed


class CountingTrainFn:
    """A stand-in trainer: records its calls, can fail on the n-th like a killed run."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[tuple] = []
        self.fail_on_call = fail_on_call

    def __call__(self, train_loader, val_loaders, k, seed):
        self.calls.append((k, seed))
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("killed")
        samples = 0
        for x, y in train_loader:
            assert x.shape[1:] == (3, 24, 24)
            torch.testing.assert_close(y.sum(dim=1), torch.ones(len(y)))
            samples += len(x)
        assert set(val_loaders) == {"clean", "conflict"}
        return {"clean_acc": 0.5 if k is None else 0.6 + 0.1 * k, "shape_bias": k or 0.0,
                "train_samples": samples}


def test_a_killed_sweep_resumes_with_only_the_unfinished_runs(shards, tmp_path):
    config = SweepConfig(k_values=[0.5, 1.0], seeds=1, epochs=1, train_fraction=0.5,
                         image_size=24, batch_size=4)
    settings = dict(out=tmp_path / "runs", device="cpu", log=None)
    killed = CountingTrainFn(fail_on_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        sweep(shards, config, train_fn=killed, **settings)
    assert killed.calls == [(None, 0), (0.5, 0)]  # the vanilla baseline finished, k=0.5 died
    resumed = CountingTrainFn()
    summary = sweep(shards, config, train_fn=resumed, **settings)
    assert resumed.calls == [(0.5, 0), (1.0, 0)]
    assert summary["best"]["k"] == 1.0
    assert summary["best"]["gain_over_vanilla"] == pytest.approx(0.2)
    with open(tmp_path / "runs" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    # train fraction 0.5 of 6 per class: 3 per class (9 samples), gone over again for as
    # many optimiser steps as the full split's ceil(18 / 4) = 5 batches: 20 samples
    assert [r["train_samples"] for r in rows] == ["20", "20", "20"]
    # a third start has nothing left to do
    again = CountingTrainFn()
    sweep(shards, config, train_fn=again, **settings)
    assert again.calls == []


def test_resuming_with_other_settings_is_an_error(shards, tmp_path):
    out = tmp_path / "runs"
    config = SweepConfig(k_values=[1.0], seeds=1, image_size=24, batch_size=4, baseline=False)
    sweep(shards, config, out=out, device="cpu", train_fn=CountingTrainFn(), log=None)
    with pytest.raises(ValueError, match="image_size differ"):
        sweep(shards, replace(config, image_size=16), out=out, device="cpu",
              train_fn=CountingTrainFn(), log=None)


def test_train_fn_must_report_clean_accuracy(shards, tmp_path):
    with pytest.raises(ValueError, match="'clean_acc'"):
        sweep(shards, SweepConfig(k_values=[1.0], seeds=1, image_size=24, baseline=False),
              out=tmp_path / "runs", train_fn=lambda *args: {"accuracy": 0.9}, log=None)


def never_called(*args):
    raise AssertionError("training started despite bad input")


@pytest.mark.parametrize(("k_values", "message"), [
    ([], "empty"), ([0.5, 1.5], r"\[0, 1\]"), ([-0.1], r"\[0, 1\]"), ([math.nan], r"\[0, 1\]"),
    ([0.5, 0.5], "repeats"), ("0,x", "comma-separated"),
])
def test_bad_k_grids_fail_before_training(shards, tmp_path, k_values, message):
    with pytest.raises(ValueError, match=message):
        sweep(shards, SweepConfig(k_values=k_values), out=tmp_path / "runs",
              train_fn=never_called, log=None)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"seeds": 0}, ValueError, "seeds must be >= 1"),
    ({"train_fraction": 0.0}, ValueError, r"train fraction must lie in \(0, 1\]"),
    ({"train_fraction": 1.5}, ValueError, r"train fraction must lie in \(0, 1\]"),
    ({"epochs": 0}, ValueError, "epochs"),
    ({"model": "vgg"}, ValueError, "unknown model"),
    ({"p_conflict": 2.0}, ValueError, "p_conflict"),
    ({"min_scale": 0.0}, ValueError, "min_scale"),
    ({"init_weights": "/no/such/file.pt"}, ValueError, "built-in trainer"),
    ({"train_fn": None, "init_weights": "/no/such/file.pt"}, FileNotFoundError, "init weights"),
])
def test_bad_settings_fail_before_training(shards, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        settings = {name: value for name, value in options.items() if name != "train_fn"}
        sweep(shards, SweepConfig(k_values=[0.0, 1.0], **settings), out=tmp_path / "runs",
              log=None, train_fn=options.get("train_fn", never_called))


def test_min_scale_reaches_the_training_loader_and_the_settings(shards, tmp_path):
    seen = []

    def record_min_scale(train_loader, val_loaders, k, seed):
        seen.append(train_loader.dataset.min_scale)
        return {"clean_acc": 0.5}

    sweep(shards, SweepConfig(k_values=[1.0], seeds=1, min_scale=0.8, baseline=False),
          train_fn=record_min_scale, out=tmp_path / "runs", log=None)
    assert seen == [0.8]
    assert json.loads((tmp_path / "runs" / "sweep.json").read_text())["min_scale"] == 0.8


def test_init_weights_for_another_class_count_fail_before_training(shards, tmp_path):
    torch.save(small_resnet(5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(ValueError, match="'fc.weight' has shape"):
        sweep(shards, SweepConfig(k_values=[1.0], init_weights=tmp_path / "five.pt"),
              out=tmp_path / "runs", log=None)


def test_missing_shards_fail_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        sweep(tmp_path / "nowhere", SweepConfig(k_values=[1.0]), out=tmp_path / "runs",
              train_fn=never_called)


def test_a_train_fraction_that_empties_a_class_fails_before_training(tmp_path):
    root = make_shard_dir(tmp_path / "s", classes=CLASSES, per_class=2, val_per_class=1,
                          shard_size=2)
    index = (root / INDEX_NAME).read_text().splitlines()
    kept = [line for line in index if not (",train," in line and line.endswith(",1"))]
    (root / INDEX_NAME).write_text("\n".join(kept) + "\n")
    with pytest.raises(ValueError, match="leaves class 'bed' empty"):
        sweep(root, SweepConfig(k_values=[1.0], train_fraction=0.5), out=tmp_path / "runs",
              train_fn=never_called)


def test_stratified_subset_is_deterministic_nested_and_per_class(shards):
    manifest = read_manifest(shards)
    half = stratified_subset(manifest, 0.5)
    assert half == stratified_subset(manifest, 0.5)
    for name in CLASSES:
        assert sum(key.startswith(f"{name}_train") for key in half) == 3
    small = stratified_subset(manifest, 0.3)  # ceil(0.3 * 6) = 2 per class
    assert len(small) == 6 and set(small) <= set(half)
    assert len(stratified_subset(manifest, 1.0)) == 18


def test_parse_k_values_reads_a_comma_list():
    assert parse_k_values("0, 0.5,1") == [0.0, 0.5, 1.0]


def fake_result(kind, k, seed, clean_acc):
    return {"name": f"{kind}{k}-{seed}", "kind": kind, "k": k, "seed": seed,
            "status": "completed", "metrics": {"clean_acc": clean_acc, "shape_bias": 0.5}}


def test_summary_gain_and_its_standard_error():
    results = [fake_result("vanilla", None, 0, 0.6), fake_result("vanilla", None, 1, 0.7),
               fake_result("k", 0.5, 0, 0.8), fake_result("k", 0.5, 1, 0.9),
               fake_result("k", 1.0, 0, 0.7), fake_result("k", 1.0, 1, 0.7)]
    summary = summarize(results, [0.5, 1.0], CLASSES, {})
    assert summary["per_k"][0]["clean_acc"] == pytest.approx(
        {"mean": 0.85, "std": math.sqrt(0.005), "n": 2})
    best = summary["best"]
    assert best["k"] == 0.5
    assert best["gain_over_vanilla"] == pytest.approx(0.2)
    # paired by seed: the differences are 0.2 and 0.2, so SE 0 and the interval is a point
    assert best["gain_se"] == pytest.approx(0.0, abs=1e-12)
    assert best["gain_ci95"] == pytest.approx([0.2, 0.2])
    assert best["gain_clear"] is True
    one_seed = summarize(results[::2], [0.5, 1.0], CLASSES, {})
    assert one_seed["best"]["gain_ci95"] is None and one_seed["best"]["gain_clear"] is None


def test_summary_compares_every_arm_with_vanilla_paired_by_seed():
    from scipy import stats as st

    va, ka = [0.60, 0.70, 0.65, 0.72], [0.63, 0.71, 0.70, 0.74]
    results = [fake_result("vanilla", None, s, v) for s, v in enumerate(va)]
    results += [fake_result("k", 0.8, s, v) for s, v in enumerate(ka)]
    results += [fake_result("vanilla-matched", None, s, v + 0.01) for s, v in enumerate(va)]
    rng = np.random.default_rng(0)
    for r in results:
        r["metrics"]["clean_correct"] = (rng.random(30) < r["metrics"]["clean_acc"]).tolist()
    summary = summarize(results, [0.8], CLASSES, {})
    comparison = summary["per_k"][0]["vs_vanilla"]
    ci = st.ttest_rel(ka, va).confidence_interval(0.95)
    assert comparison["paired_t"]["ci_low"] == pytest.approx(ci.low)
    assert comparison["paired_t"]["ci_high"] == pytest.approx(ci.high)
    assert comparison["bootstrap"]["seeds"] == 4 and comparison["bootstrap"]["images"] == 30
    ka_img = np.array([r["metrics"]["clean_correct"] for r in results[4:8]], dtype=float)
    va_img = np.array([r["metrics"]["clean_correct"] for r in results[:4]], dtype=float)
    assert comparison["bootstrap"]["diff"] == pytest.approx(ka_img.mean() - va_img.mean())
    assert isinstance(comparison["seeds_for_80_power"], int)
    assert summary["vanilla_matched"]["vs_vanilla"]["paired_t"]["diff"] == pytest.approx(0.01)


def test_fraction_runs_get_the_full_runs_steps_and_add_mode_reaches_the_loader(shards, tmp_path):
    seen = {}

    def count(train_loader, val_loaders, k, seed):
        rows = [len(x) for x, _ in train_loader]
        seen.setdefault(k, []).append((len(train_loader), sum(rows), max(rows)))
        return {"clean_acc": 0.5}

    common = dict(seeds=1, baseline=False, batch_size=4, image_size=24)
    run = dict(train_fn=count, log=None)
    sweep(shards, SweepConfig(k_values=[1.0], **common), out=tmp_path / "full", **run)
    sweep(shards, SweepConfig(k_values=[0.5], train_fraction=0.5, **common),
          out=tmp_path / "half", **run)
    sweep(shards, SweepConfig(k_values=[0.0], train_fraction=0.5, match_steps=False, **common),
          out=tmp_path / "one", **run)
    full = read_manifest(shards).count("train")
    assert seen[1.0][0][0] == seen[0.5][0][0] == math.ceil(full / 4)  # same optimiser steps
    assert seen[0.0][0][0] < seen[1.0][0][0]  # one pass over the half: fewer steps
    # add mode keeps the 4 originals and appends round(0.5 * 4) = 2 composites; the
    # compute-matched vanilla sees as many images as the add-mode run
    sweep(shards, SweepConfig(k_values=[0.8], mode="add", alpha=0.5, texture_layout="shuffled",
                              tile_size=8, matched_baseline=True,
                              **{**common, "baseline": True, "seeds": 1}),
          out=tmp_path / "add", **run)
    (_, add_rows, add_batch), = seen[0.8]
    vanilla, matched = seen[None]
    assert add_batch == 6 and vanilla[2] == 4
    assert vanilla[1] == full and abs(matched[1] - add_rows) < 6
    settings = json.loads((tmp_path / "add" / "sweep.json").read_text())
    assert (settings["mode"], settings["alpha"], settings["texture_layout"]) == \
        ("add", 0.5, "shuffled")


def test_builtin_sweep_with_aux_bn_checkpoints_and_compares_paired(shards, tmp_path):
    config = SweepConfig(k_values=[0.0, 1.0], seeds=2, epochs=1, image_size=24, batch_size=8,
                         mode="add", aux_bn=True, matched_baseline=True)
    summary = sweep(shards, config, out=tmp_path / "runs", device="cpu", log=None)
    for name in ("vanilla-seed0", "vanilla-matched-seed1", "k1-seed0"):
        state = torch.load(tmp_path / "runs" / "runs" / name / "best.pt", weights_only=True)
        assert any(".aux." in key for key in state["model"])
    result = json.loads((tmp_path / "runs" / "runs" / "k0-seed1" / "result.json").read_text())
    assert len(result["metrics"]["clean_correct"]) == read_manifest(shards).count("val")
    assert sum(result["metrics"]["clean_correct"]) / len(result["metrics"]["clean_correct"]) \
        == pytest.approx(result["metrics"]["clean_acc"])
    assert summary["ensemble_k0_k1"]["clean_acc"]["n"] == 2  # aux-bn checkpoints load
    comparison = summary["per_k"][1]["vs_vanilla"]
    assert comparison["seeds"] == [0, 1] and comparison["bootstrap"]["seeds"] == 2
    assert summary["vanilla_matched"]["vs_vanilla"]["paired_t"]["n"] == 2
    with pytest.raises(ValueError, match="mode='add'"):
        sweep(shards, SweepConfig(k_values=[0.5], matched_baseline=True), out=tmp_path / "x",
              log=None)
    with pytest.raises(ValueError, match="built-in trainer"):
        sweep(shards, SweepConfig(k_values=[0.5], aux_bn=True), train_fn=never_called,
              out=tmp_path / "x", log=None)
