"""``stexture label SHARDS``: write the soft labels ``s`` and ``t`` of every sample beside the
shards (a sidecar ``SHARDS/labels-NAME``), for ``make_loader(..., labels="soft", k=...)``."""

from __future__ import annotations

import argparse

from ..shards import storage
from ..training.crossfit import DEFAULT_FOLDS
from ..training.models import MODELS
from ..training.soft_labels import DEFAULT_GRID, label_shards
from ..training.trainer import TrainConfig
from ._output import print_line, print_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", type=storage.location,
                        help="shard folder written by `stexture decompose` (a local one: the "
                        "label set is written beside the shards)")
    parser.add_argument("--name", default="default",
                        help="the label set's name: written to SHARDS/labels-NAME (NAME "
                        "'default' unless given)")
    parser.add_argument("--structure-model", default=None,
                        help="the structure model: a checkpoint of the built-in --model (a "
                        "sweep's runs/structure-seed0/best.pt, or a state_dict) or "
                        "'package.module:function', called with the class count and returning "
                        "the nn.Module (with dense_logits(x) unless it is a built-in ResNet). "
                        "Without both models: train them here with cross-fitting")
    parser.add_argument("--texture-model", default=None,
                        help="the texture model, as --structure-model")
    parser.add_argument("--model", default="small", choices=tuple(sorted(MODELS)),
                        help="architecture of the checkpoints and of the models trained here")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                        help="cross-fitting folds: each sample is labelled by models trained "
                        "on the other folds")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="softmax temperature of the label maps")
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID,
                        help="label map cells per side, over the whole image")
    parser.add_argument("--input-size", type=int, default=None,
                        help="shorter side the whole image is resized to for the models "
                        "(default: what an average training crop of --image-size shows, 80 "
                        "for 64)")
    parser.add_argument("--topk", type=int, default=0,
                        help="store only the k most probable classes per cell (0: all classes "
                        "below 64 classes, else 5)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="cross-fitting: most epochs per model")
    parser.add_argument("--lr", type=float, default=1e-3, help="cross-fitting: learning rate")
    parser.add_argument("--image-size", type=int, default=64,
                        help="cross-fitting: side of the training crops")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="cross-fitting: images per training batch")
    parser.add_argument("--seed", type=int, default=0, help="cross-fitting: training seed")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                        help="where the models train and label (auto: the GPU when there "
                        "is one)")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--teachers-from", default=None, metavar="NAME",
                        help="label with the cross-fitted models of label set NAME of these "
                        "shards instead of training new ones (another grid or temperature)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a label set of this name made with other settings")


def run(args: argparse.Namespace) -> int:
    if storage.is_url(str(args.shards)):
        raise ValueError(f"{args.shards} is a URL: stexture label writes its label set beside "
                         "the shards and reads them from a local folder only; copy the folder "
                         "to a local one (and the label set back, if the training reads from "
                         "the bucket)")
    log = (lambda line: None) if args.quiet else print_line
    train = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    labels = label_shards(
        args.shards, name=args.name, structure_model=args.structure_model,
        texture_model=args.texture_model, model=args.model, folds=args.folds,
        temperature=args.temperature, grid=args.grid, input_size=args.input_size,
        topk=args.topk, train=train,
        image_size=args.image_size, batch_size=args.batch_size, device=args.device,
        workers=args.workers, teachers_from=args.teachers_from, overwrite=args.overwrite,
        progress=not args.quiet, log=log)
    info = labels.info
    print_text(f"{labels.folder}: s and t on a {info['grid']}x{info['grid']} grid, "
               f"{'top ' + str(info['topk']) if info['topk'] else 'all'} of "
               f"{len(labels.classes)} classes, temperature {info['temperature']:g}, "
               f"{'folds ' + str(info['folds']) if info['folds'] else 'given models'}")
    return 0
