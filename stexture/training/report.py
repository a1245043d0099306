"""The sweep report: ``results.csv``, ``summary.json``, ``sweep.png`` and ``report.md``.

Per arm (each k, the vanilla baseline, the compute-matched vanilla arm, the k=0/k=1
ensemble, the structure- and texture-layer teachers) the summary gives, for every metric,
the mean and the sample standard deviation (``ddof=1``; null for a single seed) over the
seeds, and under ``vs_vanilla`` the comparison of its clean accuracy with vanilla's, paired
by seed (same initial weights, same data order; :mod:`stexture.training.stats`): the
paired-t 95% interval of the mean difference, a bootstrap interval over seeds and validation
images (when the runs recorded per-image results, ``clean_correct``), and, from the observed
sd of the per-seed differences, the seeds a paired t-test needs for 80% power at the effect
the claim names (``TARGET_EFFECT``, +1.2 points: the report's 92% -> 93.2%) and the power
the runs have at that effect. Not at the observed difference: that power follows from the
interval itself (about 50% when it touches 0) and says nothing about the claim.

The best k is the one with the highest mean clean accuracy (the first in the grid on a
tie); its gain over vanilla is clear when the paired-t 95% interval excludes 0. The layer
teachers are judged on their own layer of the validation images, so they are not compared
with vanilla.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stats import paired_bootstrap, paired_t, power_at, seeds_for_power

__all__ = ["METRICS", "REQUIRED_METRIC", "compare_to_vanilla", "summarize", "write_report"]

REQUIRED_METRIC = "clean_acc"
METRICS = (REQUIRED_METRIC, "shape_bias", "conflict_structure_acc", "conflict_texture_acc")
# per-image 0/1 results of the clean validation set, for the bootstrap over images
PER_IMAGE = "clean_correct"
CONFIDENCE = 0.95
POWER = 0.8
#: The effect the claim names (92% -> 93.2%): what the power figures are computed for.
TARGET_EFFECT = 0.012
_FIXED_COLUMNS = ("name", "kind", "k", "seed", "status", "stop_reason", "best_epoch",
                  "epochs_run", "seconds", *METRICS, "conflict_n")


def _stats(values: Sequence[Any]) -> dict[str, Any]:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(finite)
    return {"mean": float(np.mean(finite)) if n else None,
            "std": float(np.std(finite, ddof=1)) if n > 1 else None, "n": n}


def _group(results: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"runs": len(results)}
    for metric in METRICS:
        entry[metric] = _stats([r["metrics"].get(metric) for r in results])
    per_class = [r["metrics"]["per_class_acc"] for r in results
                 if len(r["metrics"].get("per_class_acc") or []) == len(classes)]
    if per_class:
        entry["per_class_acc"] = {name: _stats([row[c] for row in per_class])["mean"]
                                  for c, name in enumerate(classes)}
    return entry


def _by_seed(results: Sequence[dict[str, Any]], key: str) -> dict[int, Any]:
    values = {}
    for r in results:
        value = r["metrics"].get(key)
        if value is not None and (not isinstance(value, float) or math.isfinite(value)):
            values[r["seed"]] = value
    return values


def compare_to_vanilla(arm: Sequence[dict[str, Any]], vanilla: Sequence[dict[str, Any]]
                       ) -> dict[str, Any]:
    """Clean accuracy of ``arm`` minus vanilla's, paired by seed: ``paired_t`` (see
    :func:`~stexture.training.stats.paired_t`), ``bootstrap`` (over seeds and validation
    images; None without per-image results), ``seeds_for_80_power`` and
    ``power_at_target`` (both at ``TARGET_EFFECT`` with the observed sd of the per-seed
    differences; None with fewer than 2 seeds)."""
    a, v = _by_seed(arm, REQUIRED_METRIC), _by_seed(vanilla, REQUIRED_METRIC)
    seeds = sorted(set(a) & set(v))
    t = paired_t([a[s] for s in seeds], [v[s] for s in seeds], CONFIDENCE)
    power = achieved = None
    if t["se"] is not None:
        sd = t["se"] * math.sqrt(t["n"])
        power = seeds_for_power(TARGET_EFFECT, sd, POWER, CONFIDENCE)
        achieved = power_at(TARGET_EFFECT, sd, t["n"], CONFIDENCE)
    a_img, v_img = _by_seed(arm, PER_IMAGE), _by_seed(vanilla, PER_IMAGE)
    paired = [s for s in seeds if s in a_img and s in v_img
              and len(a_img[s]) == len(v_img[s]) > 0]
    boot = None
    if paired and len({len(a_img[s]) for s in paired}) == 1:
        boot = paired_bootstrap(np.array([a_img[s] for s in paired]),
                                np.array([v_img[s] for s in paired]), CONFIDENCE)
    return {"seeds": seeds, "paired_t": t, "bootstrap": boot, "seeds_for_80_power": power,
            "target_effect": TARGET_EFFECT, "power_at_target": achieved}


def _gain(top: dict[str, Any]) -> dict[str, Any]:
    t = top["vs_vanilla"]["paired_t"]
    if t["diff"] is None:
        return {"gain_over_vanilla": None, "gain_se": None, "gain_ci95": None,
                "gain_clear": None}
    ci = None if t["ci_low"] is None else [t["ci_low"], t["ci_high"]]
    return {"gain_over_vanilla": t["diff"], "gain_se": t["se"], "gain_ci95": ci,
            "gain_clear": None if ci is None else bool(ci[0] > 0 or ci[1] < 0)}


def summarize(results: Sequence[dict[str, Any]], k_values: Sequence[float],
              classes: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    """The summary dict (``summary.json``) of the finished runs; see the module docstring."""
    vanilla_runs = [r for r in results if r["kind"] == "vanilla"]

    def arm(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        entry = _group(runs, classes)
        if vanilla_runs:
            entry["vs_vanilla"] = compare_to_vanilla(runs, vanilla_runs)
        return entry

    per_k = [{"k": k, **arm([r for r in results if r["kind"] == "k" and r["k"] == k])}
             for k in k_values]
    matched_runs = [r for r in results if r["kind"] == "vanilla-matched"]
    ensemble_runs = [r for r in results if r["kind"] == "ensemble"]
    layer_runs = {kind: [r for r in results if r["kind"] == kind]
                  for kind in ("structure", "texture")}
    ranked = [e for e in per_k if e[REQUIRED_METRIC]["mean"] is not None]
    best = None
    if ranked:
        top = max(ranked, key=lambda e: e[REQUIRED_METRIC]["mean"])
        best = {"k": top["k"], "clean_acc_mean": top[REQUIRED_METRIC]["mean"],
                "clean_acc_std": top[REQUIRED_METRIC]["std"], "seeds": top[REQUIRED_METRIC]["n"]}
        if vanilla_runs:
            best.update(_gain(top))
    return {
        "settings": settings,
        "classes": list(classes),
        "metrics": list(METRICS),
        "per_k": per_k,
        "vanilla": _group(vanilla_runs, classes) if vanilla_runs else None,
        "vanilla_matched": arm(matched_runs) if matched_runs else None,
        "ensemble_k0_k1": arm(ensemble_runs) if ensemble_runs else None,
        # judged on their own layer of the validation images, so not paired with vanilla
        **{f"{kind}_layer": _group(runs, classes) if runs else None
           for kind, runs in layer_runs.items()},
        "best": best,
        "gain_definition": "paired by seed: mean of (arm - vanilla) clean accuracy with the "
                           "paired-t 95% interval; the gain is clear when it excludes 0",
        "unfinished_runs": [{"name": r["name"], "status": r["status"],
                             "reason": r.get("stop_reason", "")}
                            for r in results if r["status"] not in ("completed", "early_stopped")],
    }


def _csv_rows(results: Sequence[dict[str, Any]], classes: Sequence[str]
              ) -> tuple[list[str], list[dict[str, Any]]]:
    extra = sorted({key for r in results for key, value in r["metrics"].items()
                    if key not in _FIXED_COLUMNS and isinstance(value, (int, float))})
    columns = [*_FIXED_COLUMNS, *(f"acc_{name}" for name in classes), *extra]
    rows = []
    for r in results:
        row = {key: r.get(key) for key in _FIXED_COLUMNS}
        row.update({key: r["metrics"].get(key) for key in (*METRICS, "conflict_n", *extra)})
        per_class = r["metrics"].get("per_class_acc") or []
        if len(per_class) == len(classes):
            row.update({f"acc_{name}": v for name, v in zip(classes, per_class, strict=True)})
        rows.append(row)
    return columns, rows


def write_results_csv(path: Path, results: Sequence[dict[str, Any]],
                      classes: Sequence[str]) -> None:
    columns, rows = _csv_rows(results, classes)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def _errorbar_series(summary: dict[str, Any], metric: str) -> tuple[list, list, list]:
    points = [(e["k"], e[metric]["mean"], e[metric]["std"] or 0.0)
              for e in summary["per_k"] if e[metric]["mean"] is not None]
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def plot_sweep(path: Path, summary: dict[str, Any]) -> None:
    """Clean accuracy and shape bias against k (mean +- std over seeds), with the vanilla
    baseline and the k=0/k=1 ensemble as horizontal lines."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no display

    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, metric, title in ((axes[0], REQUIRED_METRIC, "clean validation accuracy"),
                              (axes[1], "shape_bias", "shape bias (cue-conflict val)")):
        ks, means, stds = _errorbar_series(summary, metric)
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=4, label="k sweep")
        for key, style, label in (("vanilla", "-", "vanilla"),
                                  ("ensemble_k0_k1", "--", "ensemble k=0 + k=1")):
            group = summary.get(key)
            if group is not None and group[metric]["mean"] is not None:
                mean, std = group[metric]["mean"], group[metric]["std"] or 0.0
                line = ax.axhline(mean, linestyle=style, color="grey" if key == "vanilla"
                                  else "tab:green", label=label)
                if std:
                    ax.axhspan(mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("k (weight of the structure class)")
        ax.set_title(title)
        ax.set_xlim(-0.05, 1.05)
        if metric == "shape_bias":
            ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.savefig(path, dpi=100)


def _cell(stat: dict[str, Any] | None) -> str:
    if stat is None or stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.4f}" + ("" if stat["std"] is None else f" ± {stat['std']:.4f}")


def _interval(stat: dict[str, Any] | None) -> str:
    if stat is None or stat.get("ci_low") is None:
        return "n/a"
    return f"{stat['diff']:+.4f} [{stat['ci_low']:+.4f}, {stat['ci_high']:+.4f}]"


def _comparison_cells(comparison: dict[str, Any] | None) -> list[str]:
    if comparison is None:
        return ["", "", "", ""]
    power = comparison["seeds_for_80_power"]
    achieved = comparison.get("power_at_target")
    return [_interval(comparison["paired_t"]), _interval(comparison["bootstrap"]),
            "n/a" if power is None else str(power),
            "n/a" if achieved is None else f"{100 * achieved:.0f}%"]


def report_markdown(summary: dict[str, Any], plot_name: str) -> str:
    """``report.md``: the best k, a table of every metric per k, the plot."""
    lines = ["# k sweep", ""]
    s = summary["settings"]
    lines.append(f"Shards `{s['shards']}`, train fraction {s['train_fraction']}, "
                 f"trainer {s['trainer']}, model {s['model']}, {s['epochs']} epoch(s), "
                 f"image size {s['image_size']}.")
    lines.append("")
    best = summary["best"]
    if best is not None:
        text = f"Best k = **{best['k']:g}**: clean accuracy {best['clean_acc_mean']:.4f}"
        if best.get("gain_over_vanilla") is not None:
            text += f", {best['gain_over_vanilla']:+.4f} over vanilla"
            if best["gain_ci95"] is None:
                text += " (one seed on a side: no interval)"
            else:
                low, high = best["gain_ci95"]
                clear = "excludes" if best["gain_clear"] else "includes"
                text += f" (paired 95% CI [{low:+.4f}, {high:+.4f}], which {clear} 0)"
        lines += [text + ".", ""]
    header = ["k", "seeds", "clean acc", "shape bias", "conflict acc (structure)",
              "conflict acc (texture)", "clean acc - vanilla (paired t 95% CI)",
              "bootstrap 95% CI (seeds x images)",
              f"seeds for 80% power at {100 * TARGET_EFFECT:+.1f} points",
              f"power at {100 * TARGET_EFFECT:+.1f} points"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(f"{e['k']:g}", e) for e in summary["per_k"]]
    rows += [(label, summary[key]) for key, label in (("vanilla", "vanilla"),
                                                      ("vanilla_matched",
                                                       "vanilla (compute-matched)"),
                                                      ("ensemble_k0_k1", "ensemble k0+k1"),
                                                      ("structure_layer",
                                                       "structure layer (teacher)"),
                                                      ("texture_layer",
                                                       "texture layer (teacher)"))
             if summary.get(key) is not None]
    for label, entry in rows:
        cells = [label, str(entry[REQUIRED_METRIC]["n"])] + [_cell(entry[m]) for m in METRICS]
        cells += _comparison_cells(entry.get("vs_vanilla"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± standard deviation over seeds. " + summary["gain_definition"] + ".",
              "", f"![clean accuracy and shape bias against k]({plot_name})", ""]
    if summary["unfinished_runs"]:
        lines.append("Runs that did not finish normally:")
        lines += [f"- {r['name']}: {r['status']} ({r['reason']})"
                  for r in summary["unfinished_runs"]]
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path, results: Sequence[dict[str, Any]], k_values: Sequence[float],
                 classes: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Write the four report files into ``out`` and return the summary."""
    summary = summarize(results, k_values, classes, settings)
    write_results_csv(out / "results.csv", results, classes)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n",
                                      encoding="utf-8")
    plot_sweep(out / "sweep.png", summary)
    (out / "report.md").write_text(report_markdown(summary, "sweep.png"), encoding="utf-8")
    return summary
