"""The sweep report: ``results.csv``, ``summary.json``, ``sweep.png`` and ``report.md``.

Per k the summary gives, for every metric, the mean and the sample standard deviation
(``ddof=1``; null for a single seed) over the seeds. The best k is the one with the highest
mean clean accuracy (the first in the grid on a tie); its gain over the vanilla baseline is
``d = m_k - m_v`` with the standard error of a difference of two independent means,

    SE(d) = sqrt(s_k^2 / n_k + s_v^2 / n_v),

(s the standard deviations, n the numbers of seeds; null unless both n >= 2), and the gain
counts as clear when ``d > 2 * SE(d)``. The groups are treated as independent although they
share seeds; when results of one seed are positively correlated this overstates SE(d), so the
test errs on the side of "not clear".
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS", "REQUIRED_METRIC", "summarize", "write_report"]

REQUIRED_METRIC = "clean_acc"
METRICS = (REQUIRED_METRIC, "shape_bias", "conflict_structure_acc", "conflict_texture_acc")
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


def _gain(best: dict[str, Any], vanilla: dict[str, Any]) -> dict[str, Any]:
    b, v = best[REQUIRED_METRIC], vanilla[REQUIRED_METRIC]
    if b["mean"] is None or v["mean"] is None:
        return {"gain_over_vanilla": None, "gain_se": None, "gain_exceeds_2se": None}
    gain = b["mean"] - v["mean"]
    se = None
    if b["std"] is not None and v["std"] is not None:
        se = math.sqrt(b["std"] ** 2 / b["n"] + v["std"] ** 2 / v["n"])
    return {"gain_over_vanilla": gain, "gain_se": se,
            "gain_exceeds_2se": None if se is None else bool(gain > 2 * se)}


def summarize(results: Sequence[dict[str, Any]], k_values: Sequence[float],
              classes: Sequence[str], settings: dict[str, Any]) -> dict[str, Any]:
    """The summary dict (``summary.json``) of the finished runs; see the module docstring."""
    per_k = []
    for k in k_values:
        entry = _group([r for r in results if r["kind"] == "k" and r["k"] == k], classes)
        per_k.append({"k": k, **entry})
    vanilla_runs = [r for r in results if r["kind"] == "vanilla"]
    ensemble_runs = [r for r in results if r["kind"] == "ensemble"]
    vanilla = _group(vanilla_runs, classes) if vanilla_runs else None
    ranked = [e for e in per_k if e[REQUIRED_METRIC]["mean"] is not None]
    best = None
    if ranked:
        top = max(ranked, key=lambda e: e[REQUIRED_METRIC]["mean"])
        best = {"k": top["k"], "clean_acc_mean": top[REQUIRED_METRIC]["mean"],
                "clean_acc_std": top[REQUIRED_METRIC]["std"], "seeds": top[REQUIRED_METRIC]["n"]}
        if vanilla is not None:
            best.update(_gain(top, vanilla))
    return {
        "settings": settings,
        "classes": list(classes),
        "metrics": list(METRICS),
        "per_k": per_k,
        "vanilla": vanilla,
        "ensemble_k0_k1": _group(ensemble_runs, classes) if ensemble_runs else None,
        "best": best,
        "gain_se_definition": "SE = sqrt(s_k^2/n_k + s_v^2/n_v), s = sample std over seeds "
                              "(ddof=1), n = seeds; the gain is clear when gain > 2*SE",
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
            if best["gain_se"] is None:
                text += " (one seed on a side: no standard error)"
            else:
                clear = "exceeds" if best["gain_exceeds_2se"] else "does not exceed"
                text += f" (SE {best['gain_se']:.4f}; the gain {clear} 2 SE)"
        lines += [text + ".", ""]
    header = ["k", "seeds", "clean acc", "shape bias", "conflict acc (structure)",
              "conflict acc (texture)"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(f"{e['k']:g}", e) for e in summary["per_k"]]
    rows += [(label, summary[key]) for key, label in (("vanilla", "vanilla"),
                                                      ("ensemble_k0_k1", "ensemble k0+k1"))
             if summary[key] is not None]
    for label, entry in rows:
        cells = [label, str(entry[REQUIRED_METRIC]["n"])] + [_cell(entry[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± standard deviation over seeds. " + summary["gain_se_definition"] + ".",
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
