"""The arms of the furniture claim: data, shards, the sweeps that train each arm."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# idle OpenMP threads sleep instead of spinning: on a shared CPU spinning threads of torch
# slow training several-fold; must be set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import stexture  # noqa: E402
from stexture.datasets import make_cue_conflict_split  # noqa: E402
from stexture.shards import ShardSettings, read_manifest, write_dataset  # noqa: E402
from stexture.shards.sources import key_from_relative_path  # noqa: E402
from stexture.training import (  # noqa: E402
    SweepConfig,
    TrainConfig,
    aux_bn,
    build_model,
    evaluate,
    fit,
    stratified_subset,
)
from stexture.training.runner import _check_settings  # noqa: E402
from stexture.training.runs import (  # noqa: E402
    FOLD_KINDS,
    LAYER_KINDS,
    Run,
    SweepState,
    finished_or_run,
    plan_runs,
)

K = 0.8
P_CONFLICT = 0.5
TEACHER_KS = (0.5, 0.8)  # the two-teacher student's k grid
TEMPERATURE = 1.0  # of the teachers' softmax
POSTHOC_TEMPERATURE = 4.0  # a softer distillation, tried after the complete run
POSTHOC_HARD_WEIGHT = 0.5  # Hinton's hard-label term, tried after the 64 px arms' run
#: The post-hoc students (each in its own sweep folder, from the full runs' teachers): the
#: distillation settings of each and the suffix of its arm's name.
POSTHOC_STUDENTS = {
    "teachers-posthoc": (dict(temperature=POSTHOC_TEMPERATURE), f"T{POSTHOC_TEMPERATURE:g}"),
    "teachers-hard": (dict(temperature=TEMPERATURE, hard_weight=POSTHOC_HARD_WEIGHT),
                      f"w{POSTHOC_HARD_WEIGHT:g}"),
}
SEVERITY = 3  # of the five corruptions, on the clean test split


def student_arm(k: float, posthoc: str | None = None) -> str:
    """The arm name of the two-teacher student at ``k``; ``posthoc``: a sweep of
    :data:`POSTHOC_STUDENTS` (that student's distillation settings)."""
    return f"teachers-k{k:g}" + ("" if posthoc is None else f"-{POSTHOC_STUDENTS[posthoc][1]}")


TEST_SPLITS = ("test", "test_shifted")
SECOND_SEED = 1000  # added to a seed for the second model of the two-vanilla ensemble

#: What each trained arm is matched to vanilla on (issue 26): "steps" - as many optimiser
#: steps as vanilla (an add-mode batch holds more images, so it sees more images);
#: "images" - as many images seen as the add-mode arms (vanilla-matched: more steps);
#: "steps (2 models)" - two models' training, as the ensembles of two runs are.
COMPUTE_MATCH = {
    "vanilla": "steps", "vanilla-matched": "images (as add-k0.8)",
    "replace-k0.8": "steps and images", "add-k0.8": "steps", "add-k0": "steps",
    "add-k1": "steps", "add-ensemble-k0+k1": "steps x 2 models",
    "oracle-k0.8": "steps", "oracle-k1": "steps", "oracle-onehot": "steps",
    "structure": "steps", "texture": "steps", "layers-ensemble": "steps x 2 models",
    "vanilla-second": "steps", "vanilla-ensemble": "steps x 2 models",
}


@dataclass(frozen=True)
class Scale:
    per_class: int
    test_per_class: int
    size: int
    epochs: int
    seeds: int
    model: str = "small"
    batch_size: int = 64
    texture_correlation: float = 0.8
    patience: int | None = None  # None: never stop early
    workers: int = 0  # data loader processes
    lr: float = 3e-3
    min_scale: float = 0.7  # of the training crops
    tile_size: int = 8  # of the shuffled donor texture


SCALES = {
    # plumbing only: the numbers mean nothing
    "smoke": Scale(per_class=10, test_per_class=4, size=32, epochs=1, seeds=2, batch_size=16),
    # ~18 min per seed on one thread of a quiet core; with --jobs 2 six seeds take about an
    # hour on 2 cores (see the README for how far this falls short of the 64 px)
    "cpu": Scale(per_class=150, test_per_class=250, size=32, epochs=30, seeds=6,
                 batch_size=32, tile_size=8),
    # one H100/H200: check with --probe that it fits 10 minutes before running it
    # (~3.5 M training images seen in all: ~18 epoch-equivalents x 6 epochs x 5 seeds x
    # 6,400; it fits at ~6,000 images a second)
    "gpu": Scale(per_class=1000, test_per_class=250, size=96, epochs=6, seeds=5,
                 model="resnet18", batch_size=256, workers=12, tile_size=16),
}


def _say(line: str) -> None:
    print(line, flush=True)


def make_data(out: Path, scale: Scale) -> Path:
    data = out / "data"
    if not (data / "dataset.json").is_file():  # written last: the data set is complete
        summary = stexture.make_furniture_dataset(
            data, per_class=scale.per_class, test_per_class=scale.test_per_class,
            size=scale.size, texture_correlation=scale.texture_correlation, overwrite=True,
            progress=False)
        _say(f"data: {summary.counts} in {summary.seconds:.0f} s")
    oracle = data / "cue_conflict"
    if not (oracle / "conflicts.csv").is_file():  # written last
        if oracle.exists():
            raise SystemExit(f"{oracle} is incomplete (killed while writing): remove it")
        make_cue_conflict_split(data, per_class=scale.per_class, size=scale.size,
                                progress=False)
        _say("data: rendered cue-conflict (oracle) images")
    return data


def rtv_text(size: int) -> str:
    return ", ".join(f"{name} {value:g}"
                     for name, value in stexture.datasets.synthetic_rtv_params(size).items())


def make_shards(data: Path, out: Path, scale: Scale, device: str) -> dict[str, Path]:
    """Shards of train (with a val split), of each test split and of the oracle images."""
    dirs = {"train": out / "shards", "test": out / "shards-test",
            "test_shifted": out / "shards-shifted", "cue_conflict": out / "shards-oracle"}
    for split, folder in dirs.items():
        if (folder / "manifest.json").is_file():
            continue
        start = time.perf_counter()
        settings = ShardSettings(
            method="rtv", params=stexture.datasets.synthetic_rtv_params(scale.size),
            device=device, size=scale.size, val_fraction=0.2 if split == "train" else 0.0,
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


# ---------------------------------------------------------------------------- the oracle arm

class OracleBatches:
    """Add-mode batches with rendered cue-conflict images: each batch of ``originals``
    (one-hot, ``is_conflict`` False) followed by ``round(P_CONFLICT * B)`` oracle images
    labelled ``k * onehot(shape class) + (1 - k) * onehot(material's class)``.

    ``route="aux"`` marks the oracle images as composites (``is_conflict`` True: the
    auxiliary BatchNorm of an aux-BN model); ``route="main"`` marks them as originals, so
    with ``k=1`` they are plain extra training images with one-hot labels: the one-hot
    oracle arm, which separates the new shapes from the soft label.
    """

    def __init__(self, originals: Any, oracle_shards: Path, scale: Scale, seed: int,
                 k: float = K, route: str = "aux") -> None:
        if not 0.0 <= k <= 1.0:
            raise ValueError(f"k must lie in [0, 1], got {k}")
        if route not in ("aux", "main"):
            raise ValueError(f"route must be 'aux' or 'main', got {route!r}")
        self.originals = originals
        self.k = k
        self.route = route
        extra = round(P_CONFLICT * scale.batch_size)
        self.oracle = stexture.make_loader(
            oracle_shards, k=1.0, p_conflict=0.0, batch_size=extra, image_size=scale.size,
            seed=seed + 10_000, min_scale=scale.min_scale, with_info=True,
            samples_per_epoch=len(originals) * extra, num_workers=scale.workers)
        classes = read_manifest(oracle_shards).classes
        with (oracle_shards.parent / "data" / "cue_conflict" / "conflicts.csv").open() as f:
            self.texture_cls = {key_from_relative_path(row["path"]):
                                classes.index(row["texture_class"]) for row in csv.DictReader(f)}
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return len(self.originals)

    def set_epoch(self, epoch: int) -> None:
        self.originals.set_epoch(epoch)
        self.oracle.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        for (x, y, *_), (xo, yo, info) in zip(self.originals, self.oracle, strict=True):
            texture = torch.tensor([self.texture_cls[key] for key in info["key"]])
            yo = (self.k * yo
                  + (1 - self.k) * torch.nn.functional.one_hot(texture, self.num_classes))
            is_conflict = torch.arange(len(x) + len(xo)) >= len(x)
            if self.route == "main":
                is_conflict[:] = False
            yield (torch.cat([x, xo]), torch.cat([y, yo.float()]),
                   {"is_conflict": is_conflict})


def oracle_checkpoint_name(k: float, seed: int, route: str = "aux") -> str:
    """The oracle run's checkpoint file: k and the route in the name, so a k grid (or the
    one-hot arm beside ``k=1``) never overwrites another run's checkpoint."""
    return f"{'onehot' if route == 'main' else f'k{k:g}'}-seed{seed}.pt"


def oracle_train_fn(out: Path, dirs: dict[str, Path], scale: Scale, device: str,
                    route: str = "aux"):
    """A sweep ``train_fn``: the sweep's (vanilla, p_conflict 0) loader plus oracle images
    labelled with the run's k, an aux-BN model, the built-in trainer; the best checkpoint
    to ``out/`` :func:`oracle_checkpoint_name`."""
    def train(train_loader, val_loaders, k, seed):
        model = aux_bn(build_model(scale.model, len(read_manifest(dirs["train"]).classes)))
        config = TrainConfig(epochs=scale.epochs, lr=scale.lr, patience=scale.patience,
                             seed=seed)
        checkpoint = out / oracle_checkpoint_name(k, seed, route)
        batches = OracleBatches(train_loader, dirs["cue_conflict"], scale, seed, k=k,
                                route=route)
        trained = fit(model, batches, val_loaders["clean"], config, device=device,
                      checkpoint_path=checkpoint)
        return {**evaluate(model, val_loaders, device), "status": trained.status,
                "stop_reason": trained.stop_reason, "history": trained.history,
                "checkpoint_file": str(checkpoint)}
    return train


# ---------------------------------------------------------------------------- the arms

def arm_sweeps(scale: Scale, dirs: dict[str, Path], out: Path, device: str
               ) -> dict[str, dict[str, Any]]:
    """Each sweep folder with its options; the arms are read from their runs."""
    add = dict(mode="add", alpha=0.5, texture_layout="shuffled", tile_size=scale.tile_size,
               aux_bn=True)
    return {
        "replace": dict(k_values=[K], baseline=True),
        # k 0 and 1 (and their ensemble, the sweep's): added after the complete run
        "add": dict(k_values=[0.0, K, 1.0], baseline=False, matched_baseline=True, **add),
        "oracle": dict(k_values=[K, 1.0], baseline=False, p_conflict=0.0,
                       train_fn=oracle_train_fn(out / "sweep-oracle" / "checkpoints", dirs,
                                                scale, device)),
        "oracle-onehot": dict(k_values=[1.0], baseline=False, p_conflict=0.0,
                              train_fn=oracle_train_fn(out / "sweep-oracle-onehot" /
                                                       "checkpoints", dirs, scale, device,
                                                       route="main")),
        # the second vanilla model of the two-vanilla ensemble (the layer ensemble's
        # control): its own initial weights and data order (seed + SECOND_SEED)
        "vanilla2": dict(k_values=[K], baseline=True, seed_offset=SECOND_SEED),
        "40": dict(k_values=[K], baseline=True, train_fraction=0.4, **add),
        "teachers": dict(k_values=list(TEACHER_KS), baseline=False, ensemble=False,
                         student="teachers", temperature=TEMPERATURE),
    }


def best_teacher_k(out: Path, seeds: list[int]) -> float | None:
    """The student's k with the best mean clean validation accuracy over ``seeds`` (the
    first of the grid on a tie), or None while a seed's student runs are missing."""
    means = []
    for k in TEACHER_KS:
        paths = [out / "sweep-teachers" / "runs" / f"k{k:g}-seed{seed}" / "result.json"
                 for seed in seeds]
        if not all(path.is_file() for path in paths):
            return None
        accs = [json.loads(path.read_text())["metrics"].get("clean_acc") for path in paths]
        means.append(np.mean([a if a is not None else 0.0 for a in accs]))
    return TEACHER_KS[int(np.argmax(means))]


def _sweep_config(scale: Scale, **settings: Any) -> SweepConfig:
    """A sweep's settings at ``scale``, with ``settings`` (the arm's) on top."""
    return SweepConfig(**{**dict(epochs=scale.epochs, model=scale.model,
                                 image_size=scale.size, batch_size=scale.batch_size,
                                 patience=scale.patience, lr=scale.lr,
                                 min_scale=scale.min_scale), **settings})


def _run_options(scale: Scale, device: str) -> dict[str, Any]:
    """Where and how a sweep runs (not part of its settings)."""
    return dict(device=device, workers=scale.workers,
                log=lambda line: None if line.startswith("  ") else _say("  " + line))


def _needed(sweep: str, runs: list[Run], arms: set[str]) -> list[Run]:
    """The runs of ``runs`` (one sweep's plan) that the arms ``arms`` need: their own, and
    what they are made from (a student's teachers, an ensemble's members)."""
    def wanted(run: Run) -> bool:
        if run.kind in LAYER_KINDS and sweep == "teachers" and "layers-ensemble" in arms:
            return True
        if sweep == "vanilla2" and run.kind == "vanilla" and "vanilla-ensemble" in arms:
            return True
        return _arm_name(sweep, {"kind": run.kind, "k": run.k}) in arms
    keep = [run for run in runs if wanted(run)]
    if any(run.kind == "k" for run in keep) and sweep.startswith("teachers"):
        keep += [run for run in runs if run.kind in FOLD_KINDS]  # the students' teachers
    if any(run.kind == "ensemble" for run in keep):
        keep += [run for run in runs if run.kind == "k" and run.k in (0.0, 1.0)]
    return [run for run in runs if run in keep]  # plan order: teachers before students


def _run_some(shards: Path, config: SweepConfig, out: Path, train_fn: Any, runs: list[Run],
              scale: Scale, device: str) -> None:
    """Train ``runs`` (part of the sweep ``config`` plans) into the sweep folder ``out``
    exactly as :func:`stexture.sweep` would, so a later whole sweep there resumes them."""
    manifest = read_manifest(shards)
    keys = (stratified_subset(manifest, config.train_fraction)
            if config.train_fraction < 1.0 else None)
    options = _run_options(scale, device)
    state = SweepState(manifest, keys, config, out, options["device"], options["workers"],
                       train_fn, options["log"], verbose=False)
    _check_settings(out, config.to_settings(shards, "train_fn" if train_fn else "builtin"))
    for run in runs:
        finished_or_run(state, run, run.name)


def run_arms(scale: Scale, dirs: dict[str, Path], out: Path, device: str, seeds: list[int],
             arms: set[str] | None = None) -> None:
    """Every arm that does not depend on other seeds (only those in ``arms`` and what they
    need, when given), seed by seed."""
    sweeps = arm_sweeps(scale, dirs, out, device)
    for seed in seeds:  # outer: an interrupted run leaves whole seeds
        for name, options in sweeps.items():
            options = {"p_conflict": P_CONFLICT, **options}
            train_fn = options.pop("train_fn", None)  # how the oracle arm runs, not a setting
            offset = options.pop("seed_offset", 0)
            config = _sweep_config(scale, seeds=[seed + offset], **options)
            _train_sweep(name, config, train_fn, scale, dirs, out, device, arms)


def _train_sweep(name: str, config: SweepConfig, train_fn: Any, scale: Scale,
                 dirs: dict[str, Path], out: Path, device: str, arms: set[str] | None
                 ) -> None:
    """Train the runs of the sweep ``name`` that ``arms`` need (all when None) into
    ``out/sweep-NAME``: as a whole sweep when they are all of its runs."""
    planned = plan_runs(config, builtin=train_fn is None)
    runs = _needed(name, planned, set(ARMS) if arms is None else arms)
    if runs == planned:
        stexture.sweep(dirs["train"], config, out=out / f"sweep-{name}", train_fn=train_fn,
                       **_run_options(scale, device))
    elif runs:
        _run_some(dirs["train"], config, out / f"sweep-{name}", train_fn, runs, scale, device)


def run_student_at_40(scale: Scale, dirs: dict[str, Path], out: Path, device: str,
                      seeds: list[int], k: float, arms: set[str] | None = None) -> None:
    """The student's 40% arm at ``k`` (the full runs' best, known once every seed's full
    student runs are done, or the registered one), with its cross-fitted teachers trained
    on the same 40%; the 40% layer models only when ``arms`` asks for them."""
    for seed in seeds:
        config = _sweep_config(scale, k_values=[k], seeds=[seed], baseline=False,
                               ensemble=False, student="teachers", temperature=TEMPERATURE,
                               train_fraction=0.4)
        _train_sweep("teachers40", config, None, scale, dirs, out, device, arms)


def _arm_name(sweep: str, result: dict[str, Any]) -> str | None:
    """The arm of a run (None: a run another arm already counts, such as a linked teacher)."""
    kind = result["kind"]
    if kind in FOLD_KINDS:  # a student's cross-fitted teacher: judged through its student
        return None
    if sweep == "vanilla2":
        return "vanilla-second" if kind == "vanilla" else None
    if sweep == "40":
        return "vanilla@40%" if kind == "vanilla" else "add-k0.8@40%"
    if sweep == "teachers40":
        return "teachers@40%" if kind == "k" else f"{kind}@40%"
    if sweep in POSTHOC_STUDENTS:
        return student_arm(result["k"], sweep) if kind == "k" else None
    if kind in ("vanilla", "vanilla-matched", "structure", "texture"):
        return kind
    if sweep == "teachers":
        return student_arm(result["k"])
    if sweep == "add":
        return "add-ensemble-k0+k1" if kind == "ensemble" else f"add-k{result['k']:g}"
    if sweep == "oracle":
        return f"oracle-k{result['k']:g}"
    return {"replace": "replace-k0.8", "oracle-onehot": "oracle-onehot"}[sweep]


ARMS = ("vanilla", "vanilla-matched", "replace-k0.8", "add-k0.8", "add-k0", "add-k1",
        "add-ensemble-k0+k1", "oracle-k0.8", "oracle-k1", "oracle-onehot", "structure",
        "texture", "layers-ensemble", "vanilla-second", "vanilla-ensemble",
        *(student_arm(k) for k in TEACHER_KS),
        *(student_arm(k, sweep) for sweep in POSTHOC_STUDENTS for k in TEACHER_KS),
        "vanilla@40%", "add-k0.8@40%", "structure@40%", "texture@40%", "layers-ensemble@40%",
        "teachers@40%")
SWEEPS = ("replace", "add", "oracle", "oracle-onehot", "vanilla2", "40", "teachers",
          "teachers40", *POSTHOC_STUDENTS)


def probe(scale: Scale, dirs: dict[str, Path], device: str) -> None:
    """Time one vanilla epoch and say how long the whole plan would take."""
    loader = stexture.make_loader(dirs["train"], k=1.0, p_conflict=0.0,
                                  batch_size=scale.batch_size, image_size=scale.size,
                                  num_workers=scale.workers, min_scale=scale.min_scale)
    model = build_model(scale.model, len(read_manifest(dirs["train"]).classes))
    start = time.perf_counter()
    fit(model, loader, None, TrainConfig(epochs=1, lr=scale.lr, patience=None), device=device)
    epoch = time.perf_counter() - start
    # vanilla 1 + replace 1 + add 1.5 + matched 1.5 + oracle 1.5 + 40% vanilla 1 + add 1.5
    # + two layer models 2 + students (one training step and two teacher forward passes:
    # ~1.7) per teacher k + at 40% two layer models 2 + a student 1.7
    # + the add-mode k=0 and k=1 runs 3 + the cross-fitted teachers (4 models on half the
    # images each) 2, at 40% 2 + oracle-k1 and the one-hot oracle 3 + the second vanilla 1
    units = 9.0 + 2 + 1.7 * len(TEACHER_KS) + 2 + 1.7 + 3 + 2 + 2 + 3 + 1
    _say(f"probe: one vanilla epoch {epoch:.1f} s; the plan is ~{units * scale.epochs} "
         f"epoch-equivalents per seed x {scale.seeds} seeds = "
         f"~{epoch * units * scale.epochs * scale.seeds / 60:.1f} min (+ evaluation)")


# the student's 40% arm and the post-hoc student need every seed's full runs first
PHASES = ("full", "40", "posthoc")


#: the arms each later phase trains (every other trained arm is the full phase's)
PHASE_ARMS = {"40": ("teachers@40%", "structure@40%", "texture@40%"),
              "posthoc": tuple(student_arm(k, sweep)
                               for sweep in POSTHOC_STUDENTS for k in TEACHER_KS)}


def parse_arms(text: str | None) -> set[str] | None:
    """The arms of ``--arms`` (comma-separated names of :data:`ARMS`); None for all."""
    if text is None:
        return None
    arms = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(arms - set(ARMS))
    if unknown or not arms:
        raise ValueError(f"unknown arms {unknown or text!r}; choose from {', '.join(ARMS)}")
    return arms


def run_phase(phase: str, scale: Scale, dirs: dict[str, Path], out: Path, device: str,
              seeds: list[int], arms: set[str] | None = None,
              student_k: float | None = None) -> None:
    """Train the runs of ``phase`` (only those of ``arms`` and what they need, if given);
    the later phases' student at ``student_k`` (registered) or else at the full runs' best.
    """
    if phase == "full":
        run_arms(scale, dirs, out, device, seeds, arms)
        return
    if arms is not None and not arms & set(PHASE_ARMS[phase]):
        return
    k = student_k if student_k is not None else best_teacher_k(out, list(range(scale.seeds)))
    if k is None:
        raise SystemExit(f"phase {phase} needs every seed's full student runs: run the full "
                         "phase first, or fix the student's k (--student-k)")
    if phase == "40":
        run_student_at_40(scale, dirs, out, device, seeds, k, arms)
    else:
        run_posthoc_students(scale, dirs, out, device, seeds, k, arms)


def run_posthoc_students(scale: Scale, dirs: dict[str, Path], out: Path, device: str,
                         seeds: list[int], k: float, arms: set[str] | None = None) -> None:
    """Added after runs that asked for them (:data:`POSTHOC_STUDENTS`; only those of
    ``arms`` when given): the student at ``k`` distilled with other settings from the *same*
    cross-fitted teachers (their finished runs are linked into the new sweep folder, which
    then trains only students)."""
    for sweep, (distil, _) in POSTHOC_STUDENTS.items():
        if arms is not None and student_arm(k, sweep) not in arms:
            continue
        folder = out / f"sweep-{sweep}"
        for seed in seeds:
            for kind in FOLD_KINDS:
                source = out / "sweep-teachers" / "runs" / f"{kind}-seed{seed}"
                target = folder / "runs" / source.name
                target.mkdir(parents=True, exist_ok=True)
                for name in ("result.json", "best.pt"):
                    if not (target / name).exists():
                        os.link(source / name, target / name)
            config = _sweep_config(scale, k_values=[k], seeds=[seed], baseline=False,
                                   ensemble=False, student="teachers", **distil)
            _train_sweep(sweep, config, None, scale, dirs, out, device, arms)
