"""The claim experiment's arm plumbing (issue 26): which runs an ``--arms`` subset trains,
the oracle checkpoints of a k grid, add mode at ``p_conflict=1`` and the calibration's
checks against hand-computed numbers. Pure Python on tiny tensors: well under a second."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.furniture_claim import arms, report  # noqa: E402
from stexture.mixing import CueConflictMix  # noqa: E402
from stexture.training import SweepConfig  # noqa: E402
from stexture.training.runs import plan_runs  # noqa: E402


def _names(sweep: str, config: SweepConfig, wanted: set[str], builtin: bool = True):
    return [run.name for run in arms._needed(sweep, plan_runs(config, builtin=builtin), wanted)]


def test_an_arm_subset_trains_its_runs_and_what_they_are_made_of():
    teachers = SweepConfig(k_values=[0.5, 0.8], seeds=[3], baseline=False, ensemble=False,
                           student="teachers")
    assert _names("teachers", teachers, {"structure", "texture"}) == [
        "structure-seed3", "texture-seed3"]  # the calibration: no students
    assert _names("teachers", teachers, {"teachers-k0.8"}) == [
        "structure-fold0-seed3", "structure-fold1-seed3", "texture-fold0-seed3",
        "texture-fold1-seed3", "k0.8-seed3"]  # a student needs its cross-fitted teachers
    assert arms._arm_name("teachers", {"kind": "texture-fold1", "k": None}) is None
    assert _names("teachers", teachers, {"layers-ensemble"}) == [
        "structure-seed3", "texture-seed3"]
    add = SweepConfig(k_values=[0.0, 0.8, 1.0], seeds=[0], baseline=False,
                      matched_baseline=True, mode="add")
    assert _names("add", add, {"add-ensemble-k0+k1"}) == ["k0-seed0", "k1-seed0",
                                                          "ensemble-seed0"]
    assert _names("add", add, {"vanilla"}) == []
    second = SweepConfig(k_values=[0.8], seeds=[1000], baseline=True)
    assert _names("vanilla2", second, {"vanilla-ensemble"}) == ["vanilla-seed1000"]
    # ... and is its own arm, not a second vanilla record of the seed
    assert arms._arm_name("vanilla2", {"kind": "vanilla", "k": None}) == "vanilla-second"
    replace = SweepConfig(k_values=[0.8], seeds=[0], baseline=True)
    assert _names("replace", replace, set(arms.ARMS)) == ["vanilla-seed0", "k0.8-seed0"]

    # the student at 40%: its cross-fitted teachers, not the 40% layer models (their own arms)
    at40 = SweepConfig(k_values=[0.8], seeds=[2], baseline=False, ensemble=False,
                       student="teachers", train_fraction=0.4)
    assert _names("teachers40", at40, {"teachers@40%"}) == [
        "structure-fold0-seed2", "structure-fold1-seed2", "texture-fold0-seed2",
        "texture-fold1-seed2", "k0.8-seed2"]
    assert _names("teachers40", at40, {"structure@40%"}) == ["structure-seed2"]
    # a post-hoc student: its teachers (linked from the full run) and itself, with a hard term
    distil, suffix = arms.POSTHOC_STUDENTS["teachers-hard"]
    hard = SweepConfig(k_values=[0.8], seeds=[1], baseline=False, ensemble=False,
                       student="teachers", **distil)
    assert _names("teachers-hard", hard, {f"teachers-k0.8-{suffix}"}) == [
        "structure-fold0-seed1", "structure-fold1-seed1", "texture-fold0-seed1",
        "texture-fold1-seed1", "k0.8-seed1"]
    assert hard.train_config(1, student=True).hard_weight == arms.POSTHOC_HARD_WEIGHT > 0


def test_arms_are_checked_by_name():
    assert arms.parse_arms(None) is None
    assert arms.parse_arms(" vanilla,structure ,texture") == {"vanilla", "structure",
                                                               "texture"}
    with pytest.raises(ValueError, match="unknown arms.*oracle-k0.5"):
        arms.parse_arms("vanilla,oracle-k0.5")
    # every arm says what it is matched to vanilla in
    trained = set(arms.ARMS) - {a for a in arms.ARMS if a.endswith("@40%")}
    assert trained - {a for a in trained if a.startswith("teachers")} <= set(
        arms.COMPUTE_MATCH)


def test_oracle_checkpoints_of_a_k_grid_and_the_one_hot_arm_do_not_collide():
    names = {arms.oracle_checkpoint_name(k, seed, route) for k in (0.8, 1.0)
             for seed in (0, 1) for route in ("aux",)}
    names |= {arms.oracle_checkpoint_name(1.0, seed, "main") for seed in (0, 1)}
    assert len(names) == 6
    assert arms.oracle_checkpoint_name(0.8, 2) == "k0.8-seed2.pt"
    assert arms.oracle_checkpoint_name(1.0, 2, "main") == "onehot-seed2.pt"


def test_add_mode_at_p_conflict_one_appends_one_composite_per_original():
    batch, size = 6, 4
    g = torch.Generator().manual_seed(0)
    structure = torch.rand(batch, 3, size, size, generator=g)
    texture = torch.rand(batch, 3, size, size, generator=g) * 0.2 - 0.1
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    mix = CueConflictMix(3, 0.8, mode="add", p_conflict=1.0, alpha=1.0,
                         generator=torch.Generator().manual_seed(1))
    x, y, info = mix(structure, texture, labels, return_info=True)
    assert x.shape[0] == 2 * batch  # Li et al.'s doubled batch
    assert info["is_conflict"].tolist() == [False] * batch + [True] * batch
    # composite j carries original j's structure (each original exactly once) ...
    assert info["structure_index"].tolist() == [*range(batch), *range(batch)]
    donors = info["texture_index"][batch:]
    assert (donors != torch.arange(batch)).all()
    # ... and, at alpha 1 in the aligned layout, the donor's whole texture: the pixels
    expected = (structure + texture[donors]).clamp(0, 1)
    torch.testing.assert_close(x[batch:], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(x[:batch], (structure + texture).clamp(0, 1), rtol=0,
                               atol=1e-6)
    for j in range(batch):
        a, b = int(labels[j]), int(labels[donors[j]])
        assert y[batch + j, a] == pytest.approx(0.8) and y[batch + j, b] == pytest.approx(0.2)


def _records(arm: str, tests: list[float], shifted: list[float]) -> list[dict]:
    return [{"arm": arm, "seed": s, "test": t, "test_shifted": h,
             "test_correct": None, "test_shifted_correct": None}
            for s, (t, h) in enumerate(zip(tests, shifted, strict=True))]


def test_the_calibration_checks_against_hand_computed_numbers():
    records = (_records("vanilla", [0.80, 0.82, 0.84], [0.60, 0.62, 0.64])  # loss 20
               + _records("structure", [0.78, 0.80, 0.81], [0.70, 0.72, 0.72])  # -2.33, loss 8.33
               + _records("texture", [0.76, 0.77, 0.78], [0.22, 0.23, 0.24]))  # -5, 23% shifted
    lines = report.calibration(records, num_classes=8)
    assert len(lines) == 4
    assert lines[0].startswith("- structure model vs vanilla, clean test: -2.3 points, "
                               "paired t 95% CI -2.3 [")
    assert lines[0].endswith("PASS")  # 2.33 <= 3 points below
    assert lines[1].startswith("- texture model vs vanilla, clean test: -5.0 points")
    assert lines[1].endswith("FAIL")
    assert "8.3 points, vanilla's 20.0 (ratio 0.42" in lines[2] and lines[2].endswith("PASS")
    assert "23.0%, +10.5 points from chance (12.5%" in lines[3] and lines[3].endswith("FAIL")
    assert report.calibration(records[:3], num_classes=8) == []  # no layer models yet
