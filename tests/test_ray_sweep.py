"""`stexture sweep --engine ray`: the runs as Ray Tune trials on a local Ray of 2 CPUs write
the local sweep's report files; a run whose trial keeps failing is named."""

import csv
import json

import pytest
from shardfactory import make_shard_dir

from stexture import cli
from stexture.training.config import SweepConfig
from stexture.training.runner import sweep

ray = pytest.importorskip("ray")

REPORT_FILES = ("results.csv", "summary.json", "sweep.png", "report.md")


# one OpenMP thread per process: see the fixture in conftest.py
pytestmark = pytest.mark.usefixtures("ray_cluster", "one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shard_dir(tmp_path_factory.mktemp("shards") / "s",
                          classes=("armchair", "bed", "chair"), per_class=6, val_per_class=2,
                          size=32, shard_size=4)


def csv_rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_two_tune_trials_write_the_local_sweeps_report(shards, tmp_path, capsys):
    args = ["--k", "0,1", "--seeds", "1", "--epochs", "1", "--device", "cpu",
            "--image-size", "32", "--batch-size", "8", "--no-baseline"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert cli.main(["sweep", str(shards), *args, "--out", str(local)]) == 0
    assert cli.main(["sweep", str(shards), *args, "--out", str(remote), "--engine", "ray",
                     "--cpus-per-trial", "1", "--gpus-per-trial", "0"]) == 0
    assert "2 trial(s) on Ray Tune, 1 CPU and 0 GPU each" in capsys.readouterr().out
    for name in REPORT_FILES:
        assert (remote / name).is_file(), name
    rows = csv_rows(remote / "results.csv")
    assert [r["name"] for r in rows] == ["k0-seed0", "k1-seed0", "ensemble-seed0"]
    assert rows == csv_rows(local / "results.csv")
    assert (json.loads((remote / "summary.json").read_text())
            == json.loads((local / "summary.json").read_text()))
    assert (remote / "report.md").read_text() == (local / "report.md").read_text()
    assert (remote / "sweep.png").read_bytes() == (local / "sweep.png").read_bytes()
    for name in ("k0-seed0", "k1-seed0"):
        assert (remote / "runs" / name / "best.pt").is_file()


def test_a_trial_that_keeps_failing_is_named_and_a_rerun_trains_only_it(shards, tmp_path):
    def failing_on_k1(train_loader, val_loaders, k, seed):
        if k == 1.0:
            raise ValueError("out of memory, say")
        return {"clean_acc": 0.5}

    def fine(train_loader, val_loaders, k, seed):
        return {"clean_acc": 0.75}

    out = tmp_path / "runs"
    config = SweepConfig(k_values=[0.0, 1.0], seeds=1, epochs=1, image_size=32, batch_size=8,
                         baseline=False)
    options = {"out": out, "engine": "ray", "log": None}
    with pytest.raises(RuntimeError, match=r"1 run\(s\) failed on Ray Tune .*"
                       r"k1-seed0: ValueError: out of memory, say"):
        sweep(shards, config, train_fn=failing_on_k1, **options)
    assert not (out / "runs" / "k1-seed0" / "result.json").exists()
    summary = sweep(shards, config, train_fn=fine, **options)
    assert [entry["clean_acc"]["mean"] for entry in summary["per_k"]] == [0.5, 0.75]
