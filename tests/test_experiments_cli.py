"""The experiments' command lines parse (``--scale gpu``, ``--probe``) and import, and the
split study runs end to end on a tiny grid (a few seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_the_claim_run_parses_gpu_and_probe_and_its_modules_import():
    from experiments.furniture_claim import arms, run
    from experiments.texture_layout import run as layout

    args = run.build_parser().parse_args(["--scale", "gpu", "--probe", "--jobs", "2"])
    assert args.scale == "gpu" and args.probe and args.jobs == 2
    assert arms.SCALES["gpu"].model == "resnet18" and arms.SCALES["gpu"].size == 96
    assert layout.DONORS == ("whole", "flat", "filled")
    # the way --jobs starts its children: the module, from the repository root
    done = subprocess.run([sys.executable, "-m", "experiments.furniture_claim.run", "--help"],
                          cwd=run.REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--probe" in done.stdout and "--scale" in done.stdout
    # a registered student k must be one the full runs train
    bad = subprocess.run([sys.executable, "-m", "experiments.furniture_claim.run",
                          "--student-k", "0.3", "--report-only"],
                         cwd=run.REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--student-k must be one of" in bad.stderr


def test_the_split_study_tables_every_method_at_a_size(capsys):
    from experiments.split_quality import run

    assert run.main(["--per-class", "1", "--sizes", "32"]) == 0
    out = capsys.readouterr().out
    best = out[out.index("| size | method | best parameters"):]
    assert all(f"| 32 | {method} |" in best for method in ("rtv", "rgf", "tv"))
    # every setting of the grid has a row in the full table
    assert out.count("| 32 | rtv |") == 1 + sum(1 for m, _ in run.grid(32) if m == "rtv")


def test_donor_textures_cut_out_the_structure_steps_and_filled_leaves_no_outline():
    import numpy as np

    from experiments.texture_layout.run import donor_texture

    structure = np.full((12, 12, 3), 0.5, dtype=np.float32)
    structure[:, 6:] = 0.8  # a step between columns 5 and 6
    texture = np.random.default_rng(0).uniform(0.1, 0.2, (12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(donor_texture(structure, texture, "whole"), texture)
    flat = donor_texture(structure, texture, "flat")
    # the step marks column 5; one pixel around it (columns 4-6) is cut out
    assert (flat[:, 4:7] == 0).all()
    np.testing.assert_array_equal(flat[:, :4], texture[:, :4])
    np.testing.assert_array_equal(flat[:, 7:], texture[:, 7:])
    filled = donor_texture(structure, texture, "filled")
    assert (filled > 0).all()  # no outline of zeros
    pool = {tuple(v) for part in (texture[:, :4], texture[:, 7:]) for v in part.reshape(-1, 3)}
    assert all(tuple(v) in pool for v in filled[:, 4:7].reshape(-1, 3))
