"""Stored soft labels against online teachers (issue 28): accuracy and wall time per epoch.

On the synthetic furniture data (RTV shards), three students of the original images are
trained against ``y = k s + (1 - k) t`` at one k, seed by seed (same seeds, so the same
initial weights and data order: paired):

- ``map``: ``s`` and ``t`` from the label maps ``stexture label`` stored (cross-fitted
  teachers, 2 folds, 10 x 10 grid), pooled over each crop by the loader;
- ``one``: the same teachers' single label per image (grid 1), the same for every crop;
- ``online``: the sweep's ``--student teachers`` (two layer models trained per seed on the
  whole training split, run on every crop during training).

It also measures how close each stored label comes to consistent teaching (Beyer et al.,
CVPR 2022): the total variation distance between the pooled label of a training crop and
the sample's own fold teacher applied to that crop.

Run from the repository root (the README's numbers: the defaults)::

    .venv/bin/python benchmarks/bench_soft_labels.py --out /tmp/soft-bench
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine_line, print_table

from stexture import make_loader
from stexture.datasets import CLASSES, make_furniture_dataset, synthetic_rtv_params
from stexture.loader.batch import IMAGENET_MEAN, IMAGENET_STD, layer_view
from stexture.loader.crops import crop_layers, random_resized_crop_box
from stexture.shards import ShardSettings, write_dataset
from stexture.shards.format import decode_sample, iter_tar_samples, read_index, read_manifest
from stexture.shards.labels import SoftLabelReader, read_label_set
from stexture.training.config import SweepConfig
from stexture.training.crossfit import assign_folds
from stexture.training.models import build_model
from stexture.training.runner import stratified_subset, sweep
from stexture.training.soft_labels import label_shards
from stexture.training.teachers import TeacherTargets, load_teacher
from stexture.training.trainer import TrainConfig

ARMS = ("map", "one", "online")


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


def consistency(shards: Path, crops_per_image: int, size: int, min_scale: float,
                images: int = 64) -> dict[str, float]:
    """Mean TV distance (s and t averaged) between the stored label pooled over a crop and
    the sample's fold teacher applied to the crop."""
    sets = {name: read_label_set(shards, name) for name in ("map", "one")}
    info = sets["map"].info
    model = info["made_by"]["crossfit"]["model"]
    folds = assign_folds({r["key"]: (r["split"], int(r["cls"])) for r in read_index(shards)},
                         info["folds"])
    teachers = {}
    for kind in ("structure", "texture"):
        for fold in range(info["folds"]):
            net = build_model(model, len(sets["map"].classes))
            state = torch.load(sets["map"].folder / "models" / f"{kind}-fold{fold}.pt",
                               weights_only=True)["model"]
            net.load_state_dict(state)
            teachers[kind, fold] = net.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    distances: dict[str, list[float]] = {name: [] for name in sets}
    samples = [decode_sample(raw) for shard in sets["map"].manifest.shards("train")
               for raw in iter_tar_samples(shards / shard.name)][:images]
    readers = {n: SoftLabelReader(s, "train", [sample.key for sample in samples])
               for n, s in sets.items()}
    for index, sample in enumerate(samples):
        for _ in range(crops_per_image):
            box = random_resized_crop_box(*sample.image.shape[:2], rng, min_scale)
            layers = crop_layers((sample.image, sample.structure), box, size, False)
            wants = []
            for kind in ("structure", "texture"):
                view = layer_view(layers[0][None], layers[1][None], kind)
                x = (torch.from_numpy(view).permute(0, 3, 1, 2).float() / 255 - mean) / std
                with torch.no_grad():
                    wants.append(torch.softmax(teachers[kind, folds[sample.key]](x), 1)[0])
            for name, reader in readers.items():
                pooled = reader.pooled(index, box, sample.image.shape)
                tv = [0.5 * float(np.abs(pooled[i] - wants[i].numpy()).sum()) for i in range(2)]
                distances[name].append(sum(tv) / 2)
    return {name: float(np.mean(d)) for name, d in distances.items()}


def accuracy_of(run_dir: Path) -> float:
    return json.loads((run_dir / "result.json").read_text())["metrics"]["clean_acc"]


def interleaved_epoch_seconds(shards: Path, out: Path, args: argparse.Namespace,
                              repeats: int = 6) -> dict[str, float]:
    """Median wall time of one training epoch of each student (loader + forward, backward
    and step of the small ResNet; the loaders built before the clock starts), the arms run
    in turn ``repeats`` times in a rotating order so that each sees the same machine load;
    the online arm with seed 0's teachers of its sweep."""
    manifest = read_manifest(shards)
    keys = stratified_subset(manifest, args.train_fraction) if args.train_fraction < 1 else None
    common = {"k": args.k, "batch_size": 32, "image_size": args.size, "min_scale": 0.7,
              "keys": keys, "seed": 0, "p_conflict": 0.0}

    def batches(arm: str):
        if arm != "online":
            return make_loader(shards, labels="soft", label_set=arm, **common)
        views = [make_loader(shards, **{**common, "k": 1.0}, view=view, with_info=True)
                 for view in ("image", "structure", "texture")]
        teachers = [load_teacher(out / "runs-online" / "runs" / f"{kind}-seed0" / "best.pt",
                                 manifest.num_classes) for kind in ("structure", "texture")]
        return TeacherTargets(*views, *teachers, k=args.k)

    def epoch(arm: str) -> float:
        torch.manual_seed(0)
        model = build_model("small", manifest.num_classes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        loader = batches(arm)
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for repeat in range(repeats):
        for arm in ARMS[repeat % len(ARMS):] + ARMS[:repeat % len(ARMS)]:
            times[arm].append(epoch(arm))
    return {arm: statistics.median(t) for arm, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=10,
                        help="epochs of the cross-fitted teachers of `stexture label`")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs of every sweep run (students, and the online arm's teachers)")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="the students' stratified share of the training split (one pass "
                        "per epoch)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--k", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    common = {"epochs": args.epochs, "train_fraction": args.train_fraction,
              "match_steps": False, "lr": 3e-3, "min_scale": 0.7, "batch_size": 32,
              "image_size": args.size, "seeds": args.seeds, "baseline": False,
              "ensemble": False, "patience": None}
    started = time.perf_counter()
    shards = prepare(args.out, args.per_class, args.size)
    timings = {"shards": time.perf_counter() - started}
    started = time.perf_counter()
    label_shards(shards, name="map", train=TrainConfig(epochs=args.teacher_epochs, lr=3e-3,
                                                       patience=None),
                 image_size=args.size, batch_size=32, min_scale=0.7, device="cpu")
    timings["label map (4 teachers + labels)"] = time.perf_counter() - started
    started = time.perf_counter()
    label_shards(shards, name="one", grid=1, teachers_from="map", image_size=args.size,
                 min_scale=0.7, device="cpu")
    timings["label one (labels only)"] = time.perf_counter() - started
    started = time.perf_counter()
    distance = consistency(shards, 4, args.size, 0.7)
    timings["consistency"] = time.perf_counter() - started
    results = {}
    for arm in ARMS:
        started = time.perf_counter()
        options = ({"student": "teachers", "temperature": 1.0} if arm == "online"
                   else {"labels": "soft", "label_set": arm})
        sweep(shards, SweepConfig(k_values=[args.k], **common, **options),
              out=args.out / f"runs-{arm}", device="cpu", log=None)
        timings[f"sweep {arm}"] = time.perf_counter() - started
        results[arm] = [accuracy_of(args.out / f"runs-{arm}" / "runs" / f"k{args.k:g}-seed{s}")
                        for s in range(args.seeds)]
    started = time.perf_counter()
    seconds = interleaved_epoch_seconds(shards, args.out, args)
    timings["epoch timing"] = time.perf_counter() - started
    print(f"\n{machine_line()}; synthetic furniture {len(CLASSES)} classes x {args.per_class}"
          f" images of {args.size} px (80/20 train/val), k={args.k}, teachers of the label "
          f"sets {args.teacher_epochs} epochs, sweep runs {args.epochs} epochs on "
          f"{args.train_fraction:.0%} of the training split, {args.seeds} seeds")
    rows = []
    online = results["online"]
    for arm in ARMS:
        accs = results[arm]
        diffs = [a - b for a, b in zip(accs, online, strict=True)]
        rows.append([arm, f"{statistics.mean(accs):.3f} ± {statistics.pstdev(accs):.3f}",
                     " ".join(f"{a:.3f}" for a in accs),
                     "" if arm == "online" else f"{statistics.mean(diffs):+.3f}",
                     f"{seconds[arm]:.1f}",
                     "" if arm == "online" else f"{distance[arm]:.3f}"])
    print_table(["student", "val acc (mean ± sd)", "per seed", "minus online (paired)",
                 "s / epoch", "TV to teacher on crop"], rows)
    print_table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()])


if __name__ == "__main__":
    main()
