"""``stexture demo`` at its smallest: every promised file, the printed table, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stexture.cli import main
from stexture.demo import DEMO_K_VALUES, SCOPE, demo_sizes, results_table, soft_label_text

TINY = ["--classes", "chair,sofa,lamp", "--per-class", "5", "--size", "32", "--epochs", "1",
        "--quiet"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    code = main(["demo", "--out", str(out), "--quick", *TINY])
    return out, code


def test_demo_writes_every_promised_file(demo_run):
    out, code = demo_run
    assert code == 0
    for name in ("shards/manifest.json", "shards/index.csv", "sweep/results.csv",
                 "sweep/summary.json", "sweep/sweep.png", "sweep/report.md", "report.md",
                 "demo-sheet.png", "demo.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "shards/manifest.json").read_text())
    assert manifest["classes"] == ["chair", "lamp", "sofa"]
    assert manifest["method"] == "rtv"
    assert manifest["splits"]["val"]["count"] == 3  # a fifth of 5 per class, rounded
    summary = json.loads((out / "sweep/summary.json").read_text())
    assert [e["k"] for e in summary["per_k"]] == list(DEMO_K_VALUES)
    assert summary["vanilla"] is not None
    # one row per sample: 2 per class, 3 classes; 5 image columns side by side
    sheet = np.asarray(Image.open(out / "demo-sheet.png"))
    assert sheet.shape[0] > 6 * 128 and sheet.shape[1] > 4 * 128


def test_demo_prints_the_table_with_every_k(demo_run, capsys):
    out, _ = demo_run
    # a second run into the same folder resumes: every phase is skipped, the table printed
    # (not --quiet, which prints only the outcome: the phase lines are wanted here)
    loud = [arg for arg in TINY if arg != "--quiet"]
    assert main(["demo", "--out", str(out), "--quick", *loud]) == 0
    printed = capsys.readouterr().out
    for k in ("0", "0.5", "0.8", "1"):
        assert f"| k = {k} |" in printed
    assert "| vanilla |" in printed
    assert "synth: finished earlier, skipped" in printed
    assert "finished earlier, skipped" in printed.split("[4/4]")[0].split("[3/4]")[1]
    assert str(out / "report.md") in printed
    # the demo says what it cannot tell, in its output and its report
    assert SCOPE in printed and SCOPE in (out / "report.md").read_text()


def test_demo_refuses_other_settings_in_the_same_folder(demo_run, capsys):
    out, _ = demo_run
    other = [a if a != "5" else "6" for a in TINY]
    assert main(["demo", "--out", str(out), *other]) == 2
    assert "per_class" in capsys.readouterr().err


def test_demo_refuses_a_folder_that_is_not_a_demo(tmp_path, capsys):
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert main(["demo", "--out", str(tmp_path), *TINY]) == 2
    assert "choose another --out" in capsys.readouterr().err


def test_demo_sizes_presets_and_overrides():
    assert demo_sizes(quick=True).per_class < demo_sizes().per_class
    assert demo_sizes(epochs=2, per_class=None).epochs == 2
    with pytest.raises(ValueError, match="per_class"):
        demo_sizes(per_class=1)
    with pytest.raises(ValueError, match="2 classes"):
        demo_sizes(classes=("chair",))


def test_soft_label_text_and_table_signs():
    assert soft_label_text(0.8, "chair", "sofa") == "0.8 chair / 0.2 sofa"
    stat = {"mean": 0.5, "std": None, "n": 1}
    summary = {"per_k": [{"k": 0.5, "clean_acc": {"mean": 0.6, "std": None, "n": 1},
                          "shape_bias": stat}],
               "vanilla": {"clean_acc": stat, "shape_bias": stat}, "ensemble_k0_k1": None}
    table = results_table(summary)
    assert "| k = 0.5 | 0.600 | 0.500 | +0.100 |" in table
    assert "| vanilla | 0.500 | 0.500 | — |" in table


def test_furniture_recipe_from_photos_to_saved_model(tmp_path):
    import importlib.util
    from pathlib import Path

    import torch

    from stexture import make_furniture_dataset
    from stexture.training import build_model

    script = Path(__file__).resolve().parent.parent / "pipelines" / "furniture_recipe.py"
    spec = importlib.util.spec_from_file_location("furniture_recipe", script)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    make_furniture_dataset(tmp_path / "photos", classes=("bed", "lamp"), per_class=6,
                           test_per_class=0, shifted_per_class=0, size=32, progress=False)
    work = tmp_path / "work"
    assert recipe.main([str(tmp_path / "photos" / "train"), str(work), "--k-grid", "0,1",
                        "--seeds", "1", "--epochs", "1", "--size", "32", "--image-size", "32",
                        "--batch-size", "8", "--val-fraction", "0.34", "--quiet"]) == 0
    info = json.loads((work / "model" / "classes.json").read_text())
    assert info["classes"] == ["bed", "lamp"] and info["k"] in (0.0, 1.0)
    model = build_model(info["model"], len(info["classes"]))
    model.load_state_dict(torch.load(work / "model" / "model.pt", weights_only=True))
    for name in ("shards/contact-sheet.png", "sweep/report.md", "model/metrics.json",
                 "model/report.md"):
        assert (work / name).is_file(), name
