"""The furniture claim on the synthetic benchmark, as a fair test (issues 13 and 26).

The claim (a furniture-recognition report): 92% -> 93.2% while the training set shrank from
97,500 to 39,000 images (40%). The pre-registered comparisons are in
``experiments/furniture_claim/README.md``; this module runs them: the arms and their data
in :mod:`.arms`, the judging on the test splits in :mod:`.judging`, the table and verdicts
in :mod:`.report`.

Arms (every one per seed, paired: same seed = same initial weights and data order):

``vanilla``          original images, one-hot labels, 100% of the training split;
``vanilla-matched``  vanilla shown as many images as the add-mode arm (compute-matched);
``replace-k0.8``     the old recipe: half of each batch replaced by full-strength, aligned
                     composites ``s_a + t_b``, labels ``0.8 a + 0.2 b``;
``add-k0.8``         Li et al.'s recipe: every original kept, ``round(0.5 B)`` composites
                     appended, routed through auxiliary BatchNorm, partial transfer
                     ``alpha = 0.5``, the donor's texture shuffled in tiles (no shape of b);
``add-k0``, ``add-k1``, ``add-ensemble-k0+k1``  (post hoc) the add recipe at k = 0 and 1,
                     and the sweep's ensemble of those two models (mean probabilities);
``oracle-k0.8``      as ``add-k0.8`` but the appended images are rendered cue-conflict images
                     (class a's shape in class b's typical material,
                     :func:`stexture.datasets.make_cue_conflict_split`): no decomposition;
``oracle-k1``        the same rendered images labelled one-hot by their shape, still routed
                     through the auxiliary BatchNorm (primary for the principle:
                     oracle-k0.8 minus oracle-k1);
``oracle-onehot``    the rendered images as plain extra training images (one-hot shape
                     label, main BatchNorm): what the new shapes alone are worth;
``vanilla-second``, ``vanilla-ensemble``  a second vanilla model per seed (initial weights
                     and data order of seed + 1000) and the ensemble of the two vanilla
                     models: the layer ensemble's control (two models' training);
``structure``, ``texture``  one model on each layer of the images (one-hot labels), judged
                     on the same layer of the test images: the report's structure-biased and
                     texture-biased models;
``teachers-k<k>``    the report's other reading: a student of the original images trained
                     against ``k softmax(T_s(structure)) + (1 - k) softmax(T_t(texture))``
                     of that seed's two layer models (:mod:`stexture.training.teachers`),
                     for each k of ``TEACHER_KS``;
``vanilla@40%``, ``add-k0.8@40%``  on a stratified 40% with the full run's optimiser steps;
``teachers@40%``     the student at the k with the best mean clean validation accuracy of
                     the full runs, its teachers and itself trained on the same 40%
                     (``structure@40%``, ``texture@40%``), at the full run's steps;
``layers-ensemble``  judged only (post hoc): the mean of the structure model's probabilities
                     on the structure layer and the texture model's on the texture layer.

Every run's best checkpoint (by clean validation accuracy) is judged on a clean test split
(the training distribution) and a shifted test split (materials not tied to class), with
the shape bias on the shifted-test images whose material is another class's typical one,
and on the clean test under five corruptions (:mod:`stexture.training.corruptions`).
Each arm is compared with vanilla per seed: paired-t 95% interval, a bootstrap over seeds
and test images, and the seeds a paired t-test would need for 80% power.

``--arms a,b,...`` trains only those arms and the runs they are made of (a student's
teachers, an ensemble's members), into the same folders, so the whole run later resumes
them; what each arm is matched to vanilla in (optimiser steps or images seen) is the
table's last column (``arms.COMPUTE_MATCH``).

Run from the repository root (resumable: the same command again continues; seeds are the
outer loop, so an interrupted run still has complete, paired seeds; ``--jobs 2`` trains two
seeds at a time, one torch thread each, which on 2 cores is faster than one seed on two
threads for models this small)::

    python -m experiments.furniture_claim.run --scale smoke   # plumbing only
    python -m experiments.furniture_claim.run --scale cpu --jobs 2  # ~1 h on 2 cores
    python -m experiments.furniture_claim.run --scale gpu     # one H100/H200
    python -m experiments.furniture_claim.run --scale gpu --probe  # 1-epoch timing first
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

#: The repository root: ``--jobs`` children run ``python -m experiments...`` from there.
REPO = Path(__file__).resolve().parents[2]

# idle OpenMP threads sleep instead of spinning: on a shared CPU spinning threads of torch
# slow training several-fold; must be set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from experiments._benchcommon import machine_line  # noqa: E402
from experiments.furniture_claim.arms import (  # noqa: E402
    P_CONFLICT,
    PHASES,
    SCALES,
    TEACHER_KS,
    TEMPERATURE,
    TEST_SPLITS,
    K,
    _say,
    best_teacher_k,
    make_data,
    make_shards,
    parse_arms,
    probe,
    rtv_text,
    run_phase,
)
from experiments.furniture_claim.judging import (  # noqa: E402
    collect_runs,
)
from experiments.furniture_claim.report import (  # noqa: E402
    calibration,
    claim_table,
    verdicts,
)
from stexture.shards import read_manifest  # noqa: E402
from stexture.training import (  # noqa: E402
    MODELS,
    stratified_subset,
)


def run_in_processes(phase: str, args: argparse.Namespace, out: Path, seeds: list[int]
                     ) -> None:
    """Run ``phase`` with the seeds dealt to ``args.jobs`` child processes."""
    base = [sys.executable, "-m", "experiments.furniture_claim.run", "--scale", args.scale,
            "--out", str(out.resolve()),
            "--device", args.device, "--phase", phase,
            "--threads", str(args.threads or 1)]
    for flag in ("model", "epochs", "per_class", "test_per_class", "seeds", "size", "arms",
                 "student_k"):
        value = getattr(args, flag)
        if value is not None:
            base += [f"--{flag.replace('_', '-')}", str(value)]
    children = [subprocess.Popen([*base, "--only-seeds", ",".join(map(str, part))], cwd=REPO)
                for part in (seeds[j::args.jobs] for j in range(args.jobs)) if part]
    codes = [child.wait() for child in children]
    if any(codes):
        raise SystemExit(f"phase {phase}: a child process failed (exit codes {codes}); run "
                         "the same command again to resume")


def build_parser() -> argparse.ArgumentParser:
    """The command line of the claim run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (default bench-claim-<scale>); resumable")
    parser.add_argument("--table", type=Path, default=None,
                        help="Markdown file for the table (default OUT/claim.md)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--probe", action="store_true",
                        help="time one vanilla epoch and project the whole run, then stop")
    parser.add_argument("--model", default=None, choices=sorted(MODELS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--size", type=int, default=None,
                        help="image size in px (default the scale's); the RTV parameters "
                        "follow it (synthetic_rtv_params)")
    parser.add_argument("--arms", default=None,
                        help="train only these arms (comma-separated, e.g. "
                        "vanilla,structure,texture for the calibration) and what they need; "
                        "default all")
    parser.add_argument("--student-k", type=float, default=None,
                        help="the two-teacher student's k for the 40%% arm and the verdicts, "
                        "fixed in a registration (one of the grid "
                        f"{', '.join(map(str, TEACHER_KS))}); default: the k with the best "
                        "mean clean validation accuracy of the full runs")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the runs finished so far")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many seeds at a time, in processes of --threads "
                        "torch threads each")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process (default: torch's; 1 with --jobs)")
    parser.add_argument("--only-seeds", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=PHASES, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the claim experiment and write its table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    threads = args.threads or (1 if args.jobs > 1 else None)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        arms = parse_arms(args.arms)
    except ValueError as error:
        parser.error(str(error))
    if args.student_k is not None and args.student_k not in TEACHER_KS:
        parser.error(f"--student-k must be one of the student's grid {list(TEACHER_KS)} "
                     f"(the full runs train those), got {args.student_k:g}")
    overrides = {"model": args.model, "epochs": args.epochs, "per_class": args.per_class,
                 "test_per_class": args.test_per_class, "seeds": args.seeds,
                 "size": args.size}
    scale = replace(SCALES[args.scale], **{k: v for k, v in overrides.items() if v is not None})
    out = args.out or Path(f"bench-claim-{args.scale}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _say(f"scale {args.scale}: {asdict(scale)} -> {out}")
    data = make_data(out, scale)
    dirs = make_shards(data, out, scale, args.device)
    if args.probe:
        probe(scale, dirs, args.device)
        return 0
    seeds = (list(range(scale.seeds)) if args.only_seeds is None
             else [int(seed) for seed in args.only_seeds.split(",")])
    if args.phase is not None:  # a child of --jobs
        run_phase(args.phase, scale, dirs, out, args.device, seeds, arms, args.student_k)
        return 0
    if not args.report_only:
        for phase in PHASES:
            if args.jobs == 1:
                run_phase(phase, scale, dirs, out, args.device, seeds, arms, args.student_k)
            else:
                run_in_processes(phase, args, out, seeds)
    records = collect_runs(out, dirs, data, scale, args.device)
    best_k = args.student_k if args.student_k is not None else best_teacher_k(out, seeds)
    manifest = read_manifest(dirs["train"])
    counts = {f: len(stratified_subset(manifest, f)) for f in (1.0, 0.4)}
    tests = {split: read_manifest(dirs[split]).count("train") for split in TEST_SPLITS}
    minutes = (time.perf_counter() - start) / 60
    text = "\n".join([
        f"# Furniture claim, synthetic benchmark (scale {args.scale})", "",
        f"{manifest.num_classes} classes, {scale.size} px, texture correlation "
        f"{scale.texture_correlation:g} (shifted test: 0); {counts[1.0]} training images "
        f"(40%: {counts[0.4]}, same optimiser steps), {manifest.count('val')} validation, "
        f"{tests['test']} clean test, {tests['test_shifted']} shifted test; model "
        f"{scale.model}, {scale.epochs} epochs, AdamW lr {scale.lr:g}, batch "
        f"{scale.batch_size}, crops >= {scale.min_scale:g} of the area, RTV "
        f"{rtv_text(scale.size)}; k {K:g}, p_conflict {P_CONFLICT:g}; {machine_line()}; "
        f"{minutes:.0f} min for this invocation.", "",
        "Mean ± sd over seeds; differences in points with 95% intervals, paired by seed.", "",
        claim_table(records), "",
        f"The two-teacher student's k: {'n/a' if best_k is None else f'{best_k:g}'} "
        f"({'registered' if args.student_k is not None else 'best mean clean validation'}); "
        f"teacher temperature {TEMPERATURE:g}.",
        "",
        "Comparisons (pre-registered in the README unless marked post hoc):",
        *verdicts(records, best_k), "",
        "Calibration (thresholds registered in the README before it ran):",
        *(calibration(records, manifest.num_classes) or ["- not run (needs vanilla, "
                                                          "structure and texture)"]), ""])
    table_path = args.table or out / "claim.md"
    table_path.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
