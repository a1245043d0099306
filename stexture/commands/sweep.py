"""``stexture sweep SHARDS``: train one model per (k, seed) and report the best k."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..mixing import MODES, TEXTURE_LAYOUTS
from ..training.models import MODELS
from ..training.sweep import STUDENTS, parse_k_values, sweep
from ..training.trainer import OPTIMIZERS
from ._output import print_line
from ._params import add_ray_address_argument

NAME = "sweep"
HELP = ("Train a model per label weight k and seed on cue-conflict batches (plus a vanilla "
        "baseline and the k=0/k=1 ensemble) and report the k with the best clean accuracy.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", type=Path, help="shard folder written by `stexture decompose`")
    parser.add_argument("--k", default="0,0.2,0.4,0.6,0.8,1",
                        help="comma-separated grid of k in [0, 1]")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per k")
    parser.add_argument("--epochs", type=int, default=10, help="most epochs per run")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="stratified share of the training split to train on, in (0, 1]; "
                        "runs on a share get as many optimiser steps as on the full split "
                        "(the share is gone over again) unless --no-match-steps")
    parser.add_argument("--no-match-steps", action="store_true",
                        help="with --train-fraction < 1: one pass over the share per epoch "
                        "(fewer optimiser steps than the full run)")
    parser.add_argument("--out", type=Path, default=Path("runs"),
                        help="output folder; rerun with the same settings to resume")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                        help="where to train (auto: the GPU when there is one)")
    parser.add_argument("--model", default="small", choices=sorted(MODELS),
                        help="small: a 3-stage ResNet of 0.3 M parameters for 32-96 px images; "
                        "resnet18: the ImageNet ResNet-18 (11 M)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square crops")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training batch")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak learning rate (after warm-up, before cosine decay)")
    parser.add_argument("--weight-decay", type=float, default=0.05,
                        help="weight decay of the weights (not of biases and batch norms): "
                        "decoupled with adamw, an L2 term with sgd")
    parser.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS,
                        help="adamw, or sgd with Nesterov momentum 0.9")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="eps: each target becomes (1 - eps) * y + eps / classes")
    parser.add_argument("--patience", type=int, default=3,
                        help="stop a run after this many epochs without a gain in clean "
                        "validation accuracy (0: never)")
    parser.add_argument("--p-conflict", type=float, default=0.5,
                        help="share of each batch that is cue-conflict")
    parser.add_argument("--mode", default="replace", choices=MODES,
                        help="replace: a share of each batch becomes composites; add: keep "
                        "every original and append the composites (Li et al.; the batch grows)")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="share of the donor's texture in a composite, in [0, 1]")
    parser.add_argument("--texture-layout", default="aligned", choices=TEXTURE_LAYOUTS,
                        help="shuffled: rearrange the donor's texture in tiles so it carries "
                        "no shape of the donor")
    parser.add_argument("--tile-size", type=int, default=16,
                        help="tile side in pixels for --texture-layout shuffled")
    parser.add_argument("--aux-bn", action="store_true",
                        help="composites through auxiliary BatchNorm statistics, evaluation "
                        "with the main ones (Li et al.'s MixBN)")
    parser.add_argument("--student", default="cue-conflict", choices=STUDENTS,
                        help="cue-conflict: the k runs train on cue-conflict batches; "
                        "teachers: each seed also trains a structure-layer and a "
                        "texture-layer model, and the k runs distil k * teacher_s + (1 - k) "
                        "* teacher_t into a model of the original images")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="softmax temperature of the teachers (--student teachers)")
    parser.add_argument("--matched-baseline", action="store_true",
                        help="with --mode add: also train vanilla on as many images as the "
                        "add-mode runs see (compute-matched)")
    parser.add_argument("--min-scale", type=float, default=0.35,
                        help="smallest share of the image area a training crop covers")
    parser.add_argument("--balance-classes", action="store_true",
                        help="weight the loss by n / (C * n_c) per class")
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="state_dict to start from (transfer learning)")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the vanilla baseline runs")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: one run after the other here; ray: each run a Ray Tune "
                        "trial on the cluster at --address (pip install 'stexture[ray]')")
    add_ray_address_argument(parser)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0,
                        help="ray engine: cores reserved by each trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="ray engine: GPUs reserved by each trial, fractions allowed "
                        "(0.25: four runs share a GPU)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print a line per epoch of every run")


def run(args: argparse.Namespace) -> int:
    summary = sweep(
        args.shards, parse_k_values(args.k), seeds=args.seeds, epochs=args.epochs,
        train_fraction=args.train_fraction, out=args.out, device=args.device, model=args.model,
        image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, optimizer=args.optimizer,
        label_smoothing=args.label_smoothing, patience=args.patience or None,
        p_conflict=args.p_conflict, min_scale=args.min_scale, mode=args.mode, alpha=args.alpha,
        texture_layout=args.texture_layout, tile_size=args.tile_size, aux_bn=args.aux_bn,
        student=args.student, temperature=args.temperature,
        matched_baseline=args.matched_baseline, match_steps=not args.no_match_steps,
        balance_classes=args.balance_classes,
        init_weights=args.init_weights, workers=args.workers, baseline=not args.no_baseline,
        engine=args.engine, address=args.address, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, log=None if args.quiet else print_line,
        progress=not args.quiet, verbose=args.verbose,
    )
    best = summary["best"]
    if best is not None and best.get("gain_over_vanilla") is not None:
        ci = best["gain_ci95"]
        print(f"best k {best['k']:g}: gain over vanilla {best['gain_over_vanilla']:+.4f}"
              + ("" if ci is None else f" (paired 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}])"))
    return 0
