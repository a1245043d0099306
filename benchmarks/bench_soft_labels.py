"""Stored soft labels against online teachers (issue 28): accuracy and wall time per epoch,
at the k the sweep picks.

On the synthetic furniture data (RTV shards), three students of the original images are
trained against ``y = k s + (1 - k) t``, seed by seed (same seeds, so the same initial
weights and data order: paired), with the **same teachers**: for each seed the sweep's
``--student teachers`` trains its cross-fitted layer models (``structure-fold<f>`` and
``texture-fold<f>``, 2 folds, each on the training samples outside its fold), and those very
checkpoints (their digests are checked) label the stored sets. The students differ only in
where their targets come from:

- ``map``: ``stexture label`` with the seed's fold teachers (one pair per fold), 10 x 10
  label maps, pooled over each crop by the loader (``stexture sweep --labels soft``);
- ``one``: the same teachers' single label per image (grid 1), the same for every crop;
- ``online``: the sweep's ``--student teachers`` k run (the teachers run on every crop during
  training). The sweep also trains two whole-split layer models per seed as report arms;
  the student does not use them, so they are not trained here.

k: with ``--k auto`` (the default) the sweep picks it first: the label set of a selection
seed's teachers (seed 100, not one of the table's), ``sweep(labels="soft")`` over the k grid
with ``--select-seeds`` student seeds (100, 101, ...), the k of the best mean clean validation
accuracy (the sweep's ``summary["best"]``); the table is then trained at that k.

It also measures how close each stored label comes to consistent teaching (Beyer et al.,
CVPR 2022): the total variation distance between the pooled label of a training crop and
the sample's own fold teacher applied to that crop (seed 0's teachers).

Run from the repository root (the docs' numbers, docs/concepts/soft-labels.md)::

    .venv/bin/python benchmarks/bench_soft_labels.py --out /tmp/soft-bench --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine_line, print_table

from stexture.datasets import CLASSES, make_furniture_dataset, synthetic_rtv_params
from stexture.loader.batch import IMAGENET_MEAN, IMAGENET_STD, layer_view
from stexture.loader.crops import crop_layers, random_resized_crop_box
from stexture.shards import ShardFolder, ShardSettings, write_dataset
from stexture.shards.format import decode_sample, iter_tar_samples
from stexture.shards.labels import SoftLabelReader, read_label_set
from stexture.training.config import DEFAULT_K_VALUES, SweepConfig, parse_k_values
from stexture.training.crossfit import assign_folds, training_keys
from stexture.training.models import build_model
from stexture.training.runner import stratified_subset, sweep
from stexture.training.runs import (
    CHECKPOINT_NAME,
    LAYER_KINDS,
    TEACHER_FOLDS,
    Run,
    SweepState,
    run_all,
)
from stexture.training.soft_labels import label_shards
from stexture.training.stats import paired_t
from stexture.training.teachers import load_teacher, module_digest

ARMS = ("map", "one", "online")
GRIDS = {"map": 10, "one": 1}
SELECT_SEED = 100  # the selection's teachers and first student seed: not a table seed
MIN_SCALE = 0.7


def prepare(out: Path, per_class: int, size: int) -> Path:
    data, shards = out / "data", out / "shards"
    if not (data / "train").is_dir():
        make_furniture_dataset(data, classes=CLASSES, per_class=per_class, test_per_class=0,
                               shifted_per_class=0, size=size, seed=0)
    settings = ShardSettings(method="rtv", params=synthetic_rtv_params(size), device="cpu",
                             size=size, val_fraction=0.2,
                             shard_size=max(16, math.ceil(len(CLASSES) * per_class / 8)))
    if not (shards / "manifest.json").is_file():  # written earlier: kept as it is
        write_dataset(data / "train", shards, settings, workers=2)
    return shards


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a daemon thread."""

    def __init__(self, every: float = 15.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        self._stop.set()
        s = self.samples
        return f"load average (1 min) {min(s):.1f}-{max(s):.1f}, mean {statistics.mean(s):.1f}"


def sweep_config(args: argparse.Namespace, epochs: int | None = None, **settings
                 ) -> SweepConfig:
    """The settings every run of the benchmark shares (students, and teachers with their
    own ``epochs``)."""
    return SweepConfig(epochs=epochs or args.epochs, train_fraction=args.train_fraction,
                       match_steps=False, lr=3e-3, min_scale=MIN_SCALE, batch_size=32,
                       image_size=args.size, baseline=False, ensemble=False, patience=None,
                       **settings)


def teacher_paths(state: SweepState, seed: int) -> dict[str, list[Path]]:
    return {kind: [state.run_dir(Run(f"{kind}-fold{fold}", None, seed)) / CHECKPOINT_NAME
                   for fold in range(TEACHER_FOLDS)] for kind in LAYER_KINDS}


def teach_and_label(state: SweepState, shards: Path, seed: int, args: argparse.Namespace,
                    arms: tuple[str, ...] = ("map", "one")) -> None:
    """Train (or find) the sweep's fold teachers of ``seed`` and label the shards with them
    as the label sets ``ARM-sSEED``, checking that the sets record those very weights and
    the sweep's fold of every training key."""
    run_all(state, [Run(f"{kind}-fold{fold}", None, seed) for kind in LAYER_KINDS
                    for fold in range(TEACHER_FOLDS)], progress=False)
    paths = teacher_paths(state, seed)
    sweep_folds = state.teacher_folds()
    for arm in arms:
        labels = label_shards(shards, name=f"{arm}-s{seed}", structure_model=paths["structure"],
                              texture_model=paths["texture"], grid=GRIDS[arm],
                              image_size=args.size, min_scale=MIN_SCALE, device="cpu")
        for kind in LAYER_KINDS:
            digests = [module_digest(load_teacher(p, len(CLASSES))) for p in paths[kind]]
            if labels.info["teachers"][kind] != digests:
                raise RuntimeError(f"label set {arm}-s{seed} does not record the sweep's "
                                   f"{kind} teachers")
        ours = assign_folds({r["key"]: (r["split"], int(r["cls"]))
                             for r in state.shards.index}, labels.info["folds"])
        if any(ours[key] != fold for key, fold in sweep_folds.items()):
            raise RuntimeError("the label set's folds differ from the sweep's teachers' folds")


def consistency(shards: Path, teachers: dict[str, list[Path]], seed: int, crops: int,
                size: int, images: int = 64) -> dict[str, float]:
    """Mean TV distance (s and t averaged) between the stored label pooled over a crop and
    the sample's fold teacher applied to the crop, for the first ``images`` training
    samples, ``crops`` random crops each; under ``"uniform"`` the distance of the uniform
    distribution to the teacher on the crop (how far the targets are from no signal)."""
    folder = ShardFolder.open(shards)
    sets = {arm: read_label_set(shards, f"{arm}-s{seed}") for arm in GRIDS}
    folds = assign_folds({r["key"]: (r["split"], int(r["cls"])) for r in folder.index},
                         sets["map"].info["folds"])
    models = {kind: [load_teacher(p, folder.num_classes) for p in paths]
              for kind, paths in teachers.items()}
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    distances: dict[str, list[float]] = {arm: [] for arm in (*sets, "uniform")}
    uniform = np.full(folder.num_classes, 1 / folder.num_classes)
    samples = [decode_sample(raw) for shard in folder.manifest.shards("train")
               for raw in iter_tar_samples(shards / shard.name)][:images]
    readers = {arm: SoftLabelReader(s, "train", [sample.key for sample in samples])
               for arm, s in sets.items()}
    for index, sample in enumerate(samples):
        for _ in range(crops):
            box = random_resized_crop_box(*sample.image.shape[:2], rng, MIN_SCALE)
            layers = crop_layers((sample.image, sample.structure), box, size, False)
            wants = []
            for kind in LAYER_KINDS:
                view = layer_view(layers[0][None], layers[1][None], kind)
                x = (torch.from_numpy(view).permute(0, 3, 1, 2).float() / 255 - mean) / std
                with torch.no_grad():
                    wants.append(torch.softmax(models[kind][folds[sample.key]](x), 1)[0])
            for arm, reader in readers.items():
                pooled = reader.pooled(index, box, sample.image.shape)
                tv = [0.5 * float(np.abs(pooled[i] - wants[i].numpy()).sum()) for i in range(2)]
                distances[arm].append(sum(tv) / 2)
            distances["uniform"].append(sum(0.5 * float(np.abs(uniform - w.numpy()).sum())
                                            for w in wants) / 2)
    return {arm: float(np.mean(d)) for arm, d in distances.items()}


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def select_k(state: SweepState, shards: Path, args: argparse.Namespace) -> tuple[float, list]:
    """The k of the best mean clean validation accuracy of ``sweep(labels="soft")`` over the
    grid, on the label map of the selection seed's teachers, and the sweep's per-k rows."""
    teach_and_label(state, shards, SELECT_SEED, args, arms=("map",))
    seeds = tuple(SELECT_SEED + i for i in range(args.select_seeds))
    summary = sweep(shards, sweep_config(args, k_values=args.k_grid, seeds=seeds,
                                         labels="soft", label_set=f"map-s{SELECT_SEED}"),
                    out=args.out / "select", device="cpu", log=None)
    runs = args.out / "select" / "runs"
    rows = [[f"{e['k']:g}", f"{e['clean_acc']['mean']:.3f}",
             " ".join(f"{result_of(runs / Run('k', e['k'], s).name)['metrics']['clean_acc']:.3f}"
                      for s in seeds)] for e in summary["per_k"]]
    return float(summary["best"]["k"]), rows


def interleaved_epoch_seconds(shards: Path, online: SweepState, k: float,
                              args: argparse.Namespace) -> dict[str, float]:
    """Median wall time of one training epoch of each student (loader + forward, backward
    and step of the small ResNet; the sweep's own training loader of seed 0, built before
    the clock starts), the arms run in turn ``args.timing_rounds`` times in a rotating order
    so that each sees the same machine load."""
    states = {arm: SweepState(ShardFolder.open(shards), online.keys,
                              sweep_config(args, labels="soft", label_set=f"{arm}-s0"),
                              args.out / f"runs-{arm}-s0", "cpu", 0, None, lambda m: None)
              for arm in GRIDS}
    states["online"] = online
    run = Run("k", k, 0)

    def epoch(arm: str) -> float:
        torch.manual_seed(0)
        model = build_model("small", len(CLASSES))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        loader = states[arm].train_loader(run)
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for repeat in range(args.timing_rounds):
        for arm in ARMS[repeat % len(ARMS):] + ARMS[:repeat % len(ARMS)]:
            times[arm].append(epoch(arm))
    return {arm: statistics.median(t) for arm, t in times.items()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every student run")
    parser.add_argument("--teacher-epochs", type=int, default=10,
                        help="epochs of the fold teachers (the same teachers for all students)")
    parser.add_argument("--train-fraction", type=float, default=0.4,
                        help="the stratified share of the training split every run trains "
                        "on (one pass per epoch)")
    parser.add_argument("--seeds", type=int, default=5, help="the table's seeds 0 .. N-1")
    parser.add_argument("--k", default="auto",
                        help="'auto': the k the sweep picks on the grid; or a fixed k")
    parser.add_argument("--k-grid", type=parse_k_values,
                        default=",".join(f"{k:g}" for k in DEFAULT_K_VALUES),
                        help="the grid of --k auto (the sweep's default grid)")
    parser.add_argument("--select-seeds", type=int, default=2,
                        help="student seeds of the k selection (100, 101, ...)")
    parser.add_argument("--timing-rounds", type=int, default=5,
                        help="interleaved timing epochs per student")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    if args.k != "auto":
        args.k = float(args.k)
    return args


def paired_cell(a: list[float], b: list[float]) -> str:
    p = paired_t(a, b)
    if p["ci_low"] is None:
        return f"{p['diff']:+.3f}"
    return f"{p['diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load = LoadSampler()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        timings[phase] = time.perf_counter() - clock
        clock = time.perf_counter()

    shards = prepare(args.out, args.per_class, args.size)
    lap("shards")
    folder = ShardFolder.open(shards)
    keys = stratified_subset(folder, args.train_fraction) if args.train_fraction < 1 else None
    # the sweep's --student teachers, its fold teachers trained with --teacher-epochs (the
    # state that trains them) and its k runs with --epochs (the state that loads them)
    teachers, online = (SweepState(folder, keys, sweep_config(args, epochs, student="teachers",
                                                              temperature=1.0),
                                   args.out / "runs-online", "cpu", 0, None, lambda m: None)
                        for epochs in (args.teacher_epochs, args.epochs))
    select_rows = []
    if args.k == "auto":
        k, select_rows = select_k(teachers, shards, args)
        lap(f"k selection (teachers of seed {SELECT_SEED}, labels, sweep)")
    else:
        k = args.k
    seeds = list(range(args.seeds))
    for seed in seeds:
        teach_and_label(teachers, shards, seed, args)
    lap("fold teachers + label sets (map, one) per seed")
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm in GRIDS:
            out = args.out / f"runs-{arm}-s{seed}"
            sweep(shards, sweep_config(args, k_values=[k], seeds=[seed], labels="soft",
                                       label_set=f"{arm}-s{seed}"), out=out, device="cpu",
                  log=None)
            results[arm].append(result_of(out / "runs" / f"k{k:g}-seed{seed}"))
        run = Run("k", k, seed)
        run_all(online, [run], progress=False)
        results["online"].append(result_of(online.run_dir(run)))
    lap("students")
    distance = consistency(shards, teacher_paths(online, 0), 0, 4, args.size)
    lap("consistency")
    seconds = interleaved_epoch_seconds(shards, online, k, args)
    lap("epoch timing")

    teacher_acc = {kind: statistics.mean(
        result_of(online.run_dir(Run(f"{kind}-fold{fold}", None, s)))["metrics"]["clean_acc"]
        for s in seeds for fold in range(TEACHER_FOLDS)) for kind in LAYER_KINDS}
    fold_keys = [len(training_keys(online.teacher_folds(), f, online.teacher_folds()))
                 for f in range(TEACHER_FOLDS)]
    train_images = len(keys) if keys is not None else folder.manifest.count("train")
    how = (f"picked by sweep(labels='soft') on the grid {','.join(f'{x:g}' for x in args.k_grid)}"
           f" (label map of seed {SELECT_SEED}'s teachers, student seeds "
           f"{SELECT_SEED}..{SELECT_SEED + args.select_seeds - 1}, best mean clean val acc)"
           if args.k == "auto" else "fixed by --k")
    print(f"\n{machine_line()}, {args.threads} torch thread(s); {load.summary()}")
    print(f"synthetic furniture {len(CLASSES)} classes x {args.per_class} images of {args.size}"
          f" px (80/20 train/val: {folder.manifest.count('val')} val images); every student "
          f"{args.epochs} epochs on {train_images} training images (one pass per epoch), "
          f"AdamW lr 3e-3, batch 32, min scale {MIN_SCALE}; seeds {seeds}")
    print(f"k = {k:g}, {how}")
    print(f"teachers (all three students, per seed, the same checkpoints): {TEACHER_FOLDS} "
          f"folds x (structure, texture), {args.teacher_epochs} epochs on the {fold_keys} "
          f"training images outside their fold; val acc on their own layer (mean over seeds "
          f"and folds): structure {teacher_acc['structure']:.3f}, texture "
          f"{teacher_acc['texture']:.3f}")
    if select_rows:
        print_table(["k", "selection: val acc (mean)", "per seed"], select_rows)
    accs = {arm: [r["metrics"]["clean_acc"] for r in results[arm]] for arm in ARMS}
    rows = []
    for arm in ARMS:
        sd = statistics.stdev(accs[arm]) if len(seeds) > 1 else 0.0
        rows.append([arm, f"{statistics.mean(accs[arm]):.3f} ± {sd:.3f}",
                     " ".join(f"{a:.3f}" for a in accs[arm]),
                     "" if arm == "online" else paired_cell(accs[arm], accs["online"]),
                     f"{seconds[arm]:.1f}",
                     "" if arm == "online" else f"{distance[arm]:.3f}"])
    print_table(["student", "val acc (mean ± sd)", "per seed",
                 "minus online, paired [95% CI]", "s / epoch", "TV to teacher on crop"], rows)
    print(f"map minus one, paired [95% CI]: {paired_cell(accs['map'], accs['one'])}")
    print(f"TV from the uniform distribution to the teacher on the crop: "
          f"{distance['uniform']:.3f} (the targets' distance from no signal)")
    print_table(["phase", "seconds"], [[p, f"{v:.0f}"] for p, v in timings.items()])
    record = {"k": k, "how": how, "accs": accs, "seconds_per_epoch": seconds,
              "tv": distance, "teacher_acc": teacher_acc, "timings": timings, "load": load.samples,
              "select": select_rows, "args": {a: str(v) for a, v in vars(args).items()}}
    (args.out / "bench_soft_labels.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
