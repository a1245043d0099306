"""From a folder of labelled photos to a trained classifier at the k a sweep chose.

    python pipelines/furniture_recipe.py PHOTOS WORKDIR [--k-grid 0,0.5,0.8,1] [--seeds 3]
                                         [--epochs 10] [--size 128] [--image-size 96] ...

PHOTOS is an ImageFolder tree (``PHOTOS/<class>/<...>/<image>``; a CSV/JSONL manifest or
WebDataset shards work too). The steps, each resumable (run the same command again after an
interruption), all through the public API of stexture:

1. ``WORKDIR/shards``: every photo resized, its RTV structure layer computed, both written
   into WebDataset shards with the class; a share of each class held out as ``val``
   (:func:`stexture.shards.write_dataset`).
2. The shards checked against their manifest and a contact sheet drawn
   (:func:`stexture.shards.validate_dataset`, :func:`stexture.shards.contact_sheet`).
3. ``WORKDIR/sweep``: one model per (k, seed) on cue-conflict batches, a vanilla baseline,
   the report (:func:`stexture.sweep`); optionally on a share of the training split
   (``--sweep-fraction``) to save time.
4. ``WORKDIR/model``: one model at the chosen k (the sweep's best, or ``--k``) trained on the
   whole training split, judged on the validation split, saved as ``model.pt`` (a
   ``state_dict`` of :func:`stexture.training.build_model`) with ``classes.json`` (class
   names in output order, model name, input size, normalisation, k) and ``report.md``.

Loading the model elsewhere::

    info = json.load(open("WORKDIR/model/classes.json"))
    model = stexture.training.build_model(info["model"], len(info["classes"]))
    model.load_state_dict(torch.load("WORKDIR/model/model.pt", weights_only=True))
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import stexture
from stexture.loader import IMAGENET_MEAN, IMAGENET_STD
from stexture.shards import ShardSettings, contact_sheet, validate_dataset, write_dataset
from stexture.training import MODELS, TrainConfig, build_model, evaluate, fit
from stexture.training.config import SweepConfig, parse_k_values


def build_shards(photos: str, shards: Path, args: argparse.Namespace) -> None:
    settings = ShardSettings(method=args.method, device=args.device, size=args.size,
                             val_fraction=args.val_fraction, shard_size=args.shard_size)
    summary = write_dataset(photos, shards, settings, workers=args.workers,
                            show_progress=not args.quiet)
    print(summary.text())


def inspect_shards(shards: Path) -> None:
    result = validate_dataset(shards, recompute=2, examples_per_class=2)
    print(result.table())
    if result.problems:
        raise SystemExit("the shards are inconsistent:\n  " + "\n  ".join(result.problems))
    print(f"contact sheet: {contact_sheet(result.examples, shards / 'contact-sheet.png')}")


def run_sweep(shards: Path, out: Path, args: argparse.Namespace) -> dict:
    config = SweepConfig(
        k_values=args.k_grid, seeds=args.seeds, epochs=args.epochs,
        train_fraction=args.sweep_fraction, model=args.model, image_size=args.image_size,
        batch_size=args.batch_size, lr=args.lr, p_conflict=args.p_conflict,
        # a share is here to save time: one pass over it per epoch, not the full run's steps
        match_steps=False)
    return stexture.sweep(shards, config, out=out, device=args.device,
                          workers=args.loader_workers)


def choose_k(summary: dict, forced: float | None) -> float:
    if forced is not None:
        return forced
    if summary["best"] is None:
        raise SystemExit("no sweep run finished; see the sweep's report.md")
    return float(summary["best"]["k"])


def train_final(shards: Path, out: Path, k: float, classes: list[str],
                args: argparse.Namespace) -> dict:
    """Train at ``k`` on the whole training split (best epoch by clean val accuracy), save
    the weights and what is needed to use them, and return the validation metrics."""
    out.mkdir(parents=True, exist_ok=True)
    done = out / "metrics.json"
    if done.is_file() and json.loads((out / "classes.json").read_text())["k"] == k:
        print(f"  final model at k={k:g} finished earlier, kept ({out})")
        return json.loads(done.read_text())
    torch.manual_seed(args.final_seed)  # the model's initial weights
    model = build_model(args.model, len(classes))
    train = stexture.make_loader(shards, k=k, split="train", batch_size=args.batch_size,
                                 image_size=args.image_size, seed=args.final_seed,
                                 p_conflict=args.p_conflict, num_workers=args.loader_workers)
    val = {kind: stexture.make_eval_loader(shards, kind=kind, split="val",
                                           batch_size=args.batch_size,
                                           image_size=args.image_size,
                                           num_workers=args.loader_workers)
           for kind in ("clean", "conflict")}
    config = TrainConfig(epochs=args.final_epochs or args.epochs, lr=args.lr,
                         patience=args.patience or None, seed=args.final_seed)
    trained = fit(model, train, val["clean"], config, device=args.device,
                  log=lambda line: print(f"  final k={k:g} {line}", flush=True))
    metrics = evaluate(model, val, args.device)
    torch.save({name: t.cpu() for name, t in model.state_dict().items()}, out / "model.pt")
    info = {"classes": classes, "model": args.model, "image_size": args.image_size,
            "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "preprocess": f"resize the shorter side to {args.image_size}, centre crop",
            "k": k, "best_epoch": trained.best_epoch, "status": trained.status}
    (out / "classes.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    # metrics.json last: its presence means the step finished
    done.write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    return metrics


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_report(workdir: Path, k: float, summary: dict, metrics: dict, seconds: dict) -> Path:
    best = summary["best"] or {}
    gain = best.get("gain_over_vanilla")
    lines = [
        "# furniture recipe", "",
        f"Chosen k = {k:g}" + ("" if gain is None else
                               f" (sweep: {gain:+.4f} clean accuracy over vanilla)") + ".",
        "" if gain is None or gain > 0 else
        "The vanilla baseline did at least as well in the sweep: on this data cue-conflict "
        "training did not raise clean accuracy; compare shape bias and robustness before "
        "choosing.", "",
        f"Final model on the whole training split: clean val accuracy "
        f"{_number(metrics.get('clean_acc'))}, shape bias {_number(metrics.get('shape_bias'))}.",
        "",
        "| step | seconds |", "|---|---|",
        *(f"| {step} | {value:.1f} |" for step, value in seconds.items()), "",
        "- shards: `shards/` (contact sheet `shards/contact-sheet.png`)",
        "- sweep: `sweep/report.md`, `sweep/results.csv`, `sweep/sweep.png`",
        "- model: `model/model.pt` (state_dict), `model/classes.json`, `model/metrics.json`",
        "",
    ]
    path = workdir / "model" / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("photos", help="ImageFolder tree PHOTOS/<class>/..., or a CSV/JSONL "
                   "manifest, or WebDataset shards")
    p.add_argument("workdir", type=Path, help="where shards, sweep and model go")
    p.add_argument("--k-grid", type=parse_k_values,
                   default="0,0.2,0.5,0.8,1", help="comma-separated k values to sweep")
    p.add_argument("--k", type=float, default=None,
                   help="train the final model at this k instead of the sweep's best")
    p.add_argument("--seeds", type=int, default=3, help="seeds per k in the sweep")
    p.add_argument("--epochs", type=int, default=10, help="epochs per sweep run")
    p.add_argument("--final-epochs", type=int, default=None,
                   help="epochs of the final model (None: as --epochs)")
    p.add_argument("--final-seed", type=int, default=0, help="seed of the final model")
    p.add_argument("--sweep-fraction", type=float, default=1.0,
                   help="share of the training split the sweep trains on")
    p.add_argument("--method", default="rtv", choices=sorted(stexture.METHODS),
                   help="smoothing method of the structure layer")
    p.add_argument("--size", type=int, default=128, help="shorter side of the stored images")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of each class held out as the val split")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--workers", type=int, default=1, help="decomposition processes")
    p.add_argument("--model", default="small", choices=sorted(MODELS),
                   help="small (0.3 M parameters, 32-96 px) or resnet18")
    p.add_argument("--image-size", type=int, default=96, help="side of the training crops")
    p.add_argument("--batch-size", type=int, default=64, help="images per training batch")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--p-conflict", type=float, default=0.5,
                   help="share of each batch that is cue-conflict")
    p.add_argument("--patience", type=int, default=3, help="early stopping (0: off)")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="data loader worker processes")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                   help="where to decompose and train (auto: the GPU when there is one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir
    shards, sweep_dir = workdir / "shards", workdir / "sweep"
    seconds: dict[str, float] = {}
    steps = [("shards", lambda: build_shards(args.photos, shards, args)),
             ("inspect", lambda: inspect_shards(shards)),
             ("sweep", lambda: run_sweep(shards, sweep_dir, args))]
    summary: dict = {}
    for number, (name, step) in enumerate(steps, 1):
        print(f"[{number}/4] {name}", flush=True)
        start = time.perf_counter()
        summary = step() or summary
        seconds[name] = time.perf_counter() - start
    k = choose_k(summary, args.k)
    print(f"[4/4] final model at k = {k:g}", flush=True)
    start = time.perf_counter()
    metrics = train_final(shards, workdir / "model", k, summary["classes"], args)
    seconds["final"] = time.perf_counter() - start
    report = write_report(workdir, k, summary, metrics, seconds)
    print(f"clean val accuracy {metrics['clean_acc']:.4f}; model in {workdir / 'model'}; "
          f"report {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
