"""The furniture claim on the synthetic benchmark: does a k between the extremes beat the
vanilla model, and does it match vanilla's accuracy with 40% of the training data?

The claim (a furniture-recognition report): 92% -> 93.2% while the training set shrank from
97,500 to 39,000 images; structure-only (k = 1) 91.7%, texture-only (k = 0) 91.5%.

What runs, all through the public API:

1. the synthetic furniture set (``stexture.make_furniture_dataset``): ``train`` and a clean
   ``test`` split at the scale's texture correlation, and ``test_shifted`` at texture
   correlation 0 (every object's material drawn at random: texture carries no class);
2. RTV shards of each split (``stexture.shards.write_dataset``; ``train`` holds out a fifth
   of each class as the validation split the sweep selects on);
3. a sweep over the k grid with the vanilla baseline on 100% of the training split
   (``stexture.sweep``), whose best k (highest mean clean validation accuracy) is carried to
4. a sweep of vanilla, k = 0, k = 1 and the best k on a stratified 40%
   (``train_fraction=0.4``);
5. every run's best checkpoint evaluated on the clean test and the shifted test shards.

The table gives mean ± standard deviation over the seeds of: clean validation accuracy (the
split k was chosen on, so the best-k row is optimistic), clean test accuracy and shifted
test accuracy (neither used for any choice), and shape bias on cue-conflict validation
images. The verdicts under the table compare means with ``2 * SE``,
``SE = sqrt(s_a^2 / n_a + s_b^2 / n_b)`` over seeds.

Run from the repository root (resumable: run the same command again after an interruption)::

    python benchmarks/bench_furniture_claim.py --scale smoke   # ~2 minutes, plumbing only
    python benchmarks/bench_furniture_claim.py --scale cpu     # < 1 hour on 2 cores
    python benchmarks/bench_furniture_claim.py --scale gpu     # larger, for one GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# idle OpenMP threads sleep instead of spinning: on a shared CPU spinning threads of torch
# slow training several-fold; must be set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import machine_line  # noqa: E402

import stexture  # noqa: E402
from stexture.shards import Settings, read_manifest, write_dataset  # noqa: E402
from stexture.training import MODELS, build_model, evaluate, stratified_subset  # noqa: E402

FRACTIONS = (1.0, 0.4)
TEST_SPLITS = ("test", "test_shifted")


@dataclass(frozen=True)
class Scale:
    per_class: int
    test_per_class: int
    size: int
    epochs: int
    seeds: int
    k_grid: tuple[float, ...]
    model: str = "small"
    batch_size: int = 64
    texture_correlation: float = 0.8
    patience: int | None = 4  # None: never stop early
    workers: int = 0  # data loader processes
    lr: float = 1e-3
    min_scale: float = 0.35  # of the training crops


SCALES = {
    # plumbing only: the numbers mean nothing
    "smoke": Scale(per_class=10, test_per_class=4, size=32, epochs=1, seeds=3,
                   k_grid=(0.0, 0.5, 1.0), batch_size=16),
    # 25 epochs at lr 3e-3 with crops >= 70% of the area: the settings that got the small
    # model near convergence in 1-seed screens (10 epochs at lr 1e-3 left vanilla at 48%)
    "cpu": Scale(per_class=200, test_per_class=50, size=64, epochs=25, seeds=3,
                 k_grid=(0.0, 0.5, 0.8, 1.0), lr=3e-3, min_scale=0.7, patience=None),
    "gpu": Scale(per_class=1500, test_per_class=300, size=96, epochs=30, seeds=5,
                 k_grid=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), model="resnet18", batch_size=128,
                 patience=6, workers=8, min_scale=0.7),
}


def _say(line: str) -> None:
    print(line, flush=True)


def make_data(out: Path, scale: Scale) -> Path:
    data = out / "data"
    if (data / "dataset.json").is_file():  # written last: the data set is complete
        _say(f"data: finished earlier ({data})")
        return data
    summary = stexture.make_furniture_dataset(
        data, per_class=scale.per_class, test_per_class=scale.test_per_class,
        size=scale.size, texture_correlation=scale.texture_correlation, overwrite=True,
        progress=False)
    _say(f"data: {summary.counts} in {summary.seconds:.0f} s")
    return data


def rtv_text(size: int) -> str:
    return ", ".join(f"{name} {value:g}"
                     for name, value in stexture.datasets.synthetic_rtv_params(size).items())


def make_shards(data: Path, out: Path, scale: Scale, device: str) -> dict[str, Path]:
    """Shards of train (with a val split) and of each test split (all in ``train``)."""
    dirs = {"train": out / "shards", "test": out / "shards-test",
            "test_shifted": out / "shards-shifted"}
    for split, folder in dirs.items():
        start = time.perf_counter()
        settings = Settings(method="rtv", params=stexture.datasets.synthetic_rtv_params(scale.size),
                            device=device, size=scale.size,
                            val_fraction=0.2 if split == "train" else 0.0,
                            shard_size=max(16, scale.per_class // 4))
        # a second process pays for its start (~10 s of imports) only on a larger split
        workers = 2 if len(list((data / split).glob("*/*"))) >= 400 else 1
        summary = write_dataset(data / split, folder, settings, workers=workers,
                                show_progress=False, log=_say)
        _say(f"shards {split}: {summary.accepted} images ({time.perf_counter() - start:.0f} s)")
    classes = {name: read_manifest(folder).classes for name, folder in dirs.items()}
    if len({tuple(c) for c in classes.values()}) != 1:
        raise ValueError(f"the splits have different classes: {classes}")
    return dirs


def run_sweeps(shards: Path, out: Path, scale: Scale, device: str) -> dict[float, dict]:
    common = dict(seeds=scale.seeds, epochs=scale.epochs, device=device, model=scale.model,
                  image_size=scale.size, batch_size=scale.batch_size, patience=scale.patience,
                  workers=scale.workers, lr=scale.lr, min_scale=scale.min_scale,
                  log=lambda line: None if line.startswith("  ") else _say("  " + line))
    _say("sweep on 100% of the training split")
    full = stexture.sweep(shards, scale.k_grid, train_fraction=1.0, out=out / "sweep-100",
                          **common)
    best_k = float(full["best"]["k"])
    _say(f"sweep on 40%: vanilla, k = 0, k = 1 and the best k = {best_k:g}")
    part = stexture.sweep(shards, sorted({0.0, 1.0, best_k}), train_fraction=0.4,
                          out=out / "sweep-40", **common)
    return {1.0: full, 0.4: part}


def _checkpoint_accuracy(checkpoint: Path, loaders: dict[str, Any], classes: int,
                         model: str, device: str) -> dict[str, float]:
    net = build_model(model, classes)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    return {split: evaluate(net, {"clean": loader}, device)["clean_acc"]
            for split, loader in loaders.items()}


def collect_runs(out: Path, dirs: dict[str, Path], scale: Scale, device: str
                 ) -> list[dict[str, Any]]:
    """One record per trained run of both sweeps: its sweep metrics and its test accuracies
    (cached in ``out/test-accuracy.json``)."""
    cache_path = out / "test-accuracy.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    classes = len(read_manifest(dirs["train"]).classes)
    loaders = {split: stexture.make_eval_loader(dirs[split], kind="clean", split="train",
                                                batch_size=scale.batch_size,
                                                image_size=scale.size,
                                                num_workers=scale.workers)
               for split in TEST_SPLITS}
    records = []
    for fraction in FRACTIONS:
        runs = out / f"sweep-{round(fraction * 100)}" / "runs"
        for result_path in sorted(runs.glob("*/result.json")):
            result = json.loads(result_path.read_text())
            if result["kind"] == "ensemble" or result.get("checkpoint") is None:
                continue
            key = str(result_path.parent.relative_to(out))
            if key not in cache:
                cache[key] = _checkpoint_accuracy(result_path.parent / result["checkpoint"],
                                                  loaders, classes, scale.model, device)
                cache_path.write_text(json.dumps(cache, indent=2) + "\n")
            records.append({"fraction": fraction, "kind": result["kind"], "k": result["k"],
                            "seed": result["seed"], "val": result["metrics"].get("clean_acc"),
                            "shape_bias": result["metrics"].get("shape_bias"),
                            "test": cache[key]["test"], "shifted": cache[key]["test_shifted"]})
    return records


def _stats(values: list[float | None]) -> tuple[float, float, int]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return float(np.mean(finite)), std, len(finite)


def _cell(values: list[float | None]) -> str:
    mean, std, n = _stats(values)
    if n == 0:
        return "n/a"
    return f"{100 * mean:.1f}" + ("" if math.isnan(std) else f" ± {100 * std:.1f}")


def _select(records: list[dict], fraction: float, kind: str, k: float | None = None
            ) -> list[dict]:
    return [r for r in records if r["fraction"] == fraction and r["kind"] == kind
            and (k is None or r["k"] == k)]


def _row_groups(records: list[dict], best_k: float) -> list[tuple[str, float, list[dict]]]:
    groups = []
    for fraction in FRACTIONS:
        groups.append(("vanilla", fraction, _select(records, fraction, "vanilla")))
        for label, k in (("k = 0 (texture only)", 0.0), ("k = 1 (structure only)", 1.0),
                         (f"best k = {best_k:g}" + (" (the runs above)" if best_k in (0.0, 1.0)
                                                    else ""), best_k)):
            groups.append((label, fraction, _select(records, fraction, "k", k)))
    return groups


def claim_table(records: list[dict], best_k: float, train_counts: dict[float, int]) -> str:
    lines = ["| model | training images | clean val acc % | clean test acc % | "
             "shifted test acc % | shape bias % | seeds |", "|---|---|---|---|---|---|---|"]
    for label, fraction, group in _row_groups(records, best_k):
        lines.append(
            f"| {label} | {train_counts[fraction]} ({fraction:.0%}) | "
            f"{_cell([r['val'] for r in group])} | {_cell([r['test'] for r in group])} | "
            f"{_cell([r['shifted'] for r in group])} | "
            f"{_cell([r['shape_bias'] for r in group])} | {len(group)} |")
    return "\n".join(lines)


def _compare(a: list[dict], b: list[dict], metric: str) -> tuple[float, float]:
    """(mean of a - mean of b, SE of the difference) for ``metric``."""
    ma, sa, na = _stats([r[metric] for r in a])
    mb, sb, nb = _stats([r[metric] for r in b])
    se = math.sqrt(sa ** 2 / na + sb ** 2 / nb) if na > 1 and nb > 1 else math.nan
    return ma - mb, se


def _judged(gain: float, se: float) -> str:
    text = f"{100 * gain:+.1f} points (SE {100 * se:.1f})"
    if math.isnan(se):
        return text + ": too few seeds to judge"
    if gain > 2 * se:
        return text + ": more than 2 SE, beyond seed noise"
    if gain < -2 * se:
        return text + ": worse by more than 2 SE"
    return text + ": within 2 SE, not distinguishable from seed noise"


def verdicts(records: list[dict], best_k: float, full_summary: dict) -> list[str]:
    best_full = _select(records, 1.0, "k", best_k)
    best_part = _select(records, 0.4, "k", best_k)
    vanilla_full = _select(records, 1.0, "vanilla")
    lines = [f"Best k on the 100% sweep (by clean validation accuracy): {best_k:g}."]
    for metric, name in (("test", "clean test"), ("shifted", "shifted test"),
                         ("val", "clean val (the selection split: optimistic)")):
        lines.append(f"- best k vs vanilla, both at 100%, {name} accuracy: "
                     + _judged(*_compare(best_full, vanilla_full, metric)) + ".")
    for metric, name in (("test", "clean test"), ("shifted", "shifted test")):
        gain, se = _compare(best_part, vanilla_full, metric)
        relation = ("cannot be compared with" if math.isnan(se) else "beats" if gain > 2 * se
                    else "falls short of" if gain < -2 * se else "matches (within 2 SE)")
        lines.append(f"- best k at 40% vs vanilla at 100%, {name} accuracy: "
                     + _judged(gain, se) + f"; best k at 40% {relation} vanilla at 100%.")
    bias = [(e["k"], e["shape_bias"]["mean"]) for e in full_summary["per_k"]
            if e["shape_bias"]["mean"] is not None]
    if bias:
        values = [b for _, b in bias]
        steps = np.diff(values)
        trend = ("rises monotonically" if np.all(steps >= 0)
                 else "rises overall" if values[-1] > values[0] else "does not rise")
        lines.append("- shape bias against k (100%, mean over seeds): "
                     + ", ".join(f"k={k:g}: {100 * b:.0f}%" for k, b in bias)
                     + f"; it {trend} with k.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (default bench-claim-<scale>); resumable")
    parser.add_argument("--table", type=Path, default=None,
                        help="Markdown file for the table (default OUT/claim.md)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--texture-correlation", type=float, default=None)
    parser.add_argument("--model", default=None, choices=sorted(MODELS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--min-scale", type=float, default=None)
    parser.add_argument("--patience", type=int, default=None, help="0: never stop early")
    parser.add_argument("--k-grid", default=None, help="comma-separated k values")
    args = parser.parse_args(argv)
    overrides = {"texture_correlation": args.texture_correlation, "model": args.model,
                 "epochs": args.epochs, "per_class": args.per_class, "seeds": args.seeds,
                 "lr": args.lr, "min_scale": args.min_scale,
                 "patience": args.patience,
                 "k_grid": None if args.k_grid is None
                 else tuple(float(k) for k in args.k_grid.split(","))}
    scale = replace(SCALES[args.scale], **{k: v for k, v in overrides.items() if v is not None})
    if scale.patience == 0:
        scale = replace(scale, patience=None)
    out = args.out or Path(f"bench-claim-{args.scale}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _say(f"scale {args.scale}: {asdict(scale)} -> {out}")
    dirs = make_shards(make_data(out, scale), out, scale, args.device)
    summaries = run_sweeps(dirs["train"], out, scale, args.device)
    records = collect_runs(out, dirs, scale, args.device)
    best_k = float(summaries[1.0]["best"]["k"])
    manifest = read_manifest(dirs["train"])
    counts = {f: len(stratified_subset(manifest, f)) for f in FRACTIONS}
    minutes = (time.perf_counter() - start) / 60
    text = "\n".join([
        f"# Furniture claim, synthetic benchmark (scale {args.scale})", "",
        f"{manifest.num_classes} classes, {scale.size} px, texture "
        f"correlation {scale.texture_correlation:g} (shifted test: 0), model {scale.model}, "
        f"at most {scale.epochs} epoch(s) (patience {scale.patience}), AdamW lr {scale.lr:g}, "
        f"crops >= {scale.min_scale:g} of the area, RTV {rtv_text(scale.size)}, "
        f"{scale.seeds} seeds, k grid {', '.join(f'{k:g}' for k in scale.k_grid)}; "
        f"{machine_line()}; "
        f"{minutes:.0f} min for this invocation.", "",
        claim_table(records, best_k, counts), "",
        *verdicts(records, best_k, summaries[1.0]), ""])
    table_path = args.table or out / "claim.md"
    table_path.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
