"""``stexture decompose SRC OUT``: turn an image collection into WebDataset shards holding
each image, its structure layer and its class, with the local engine (worker processes) or
the Ray engine (tasks on a Ray cluster)."""

from __future__ import annotations

import argparse
import sys
from functools import partial

from ..shards.engine import DecomposeFailed, DecomposeInterrupted
from ..shards.local import write_dataset
from ..shards.plan import ShardSettings
from ..shards.ray_engine import write_dataset_ray
from ._output import print_line, print_text
from ._params import add_method_arguments, add_ray_address_argument, parse_params
from ._storage_args import add_storage_arguments, storage_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ShardSettings.__dataclass_fields__
    parser.add_argument("src", help="image folder, .csv/.jsonl manifest, .tar shard or folder "
                        "of them; a local path or an fsspec URL (s3://bucket/photos)")
    parser.add_argument("out", help="output folder for shards and manifest.json; a local path "
                        "or an fsspec URL")
    add_method_arguments(parser)
    parser.add_argument("--size", type=int, default=defaults["size"].default,
                        help="resize so the shorter side is this many pixels (0 keeps the size)")
    parser.add_argument("--image-format", choices=("jpg", "png"),
                        default=defaults["image_format"].default,
                        help="how the image is stored (png is lossless)")
    parser.add_argument("--quality", type=int, default=defaults["quality"].default,
                        help="JPEG quality of the stored image")
    parser.add_argument("--val-fraction", type=float, default=defaults["val_fraction"].default,
                        help="fraction of each class that goes to the val split")
    parser.add_argument("--shard-size", type=int, default=defaults["shard_size"].default,
                        help="samples per shard")
    parser.add_argument("--max-pixels", type=int, default=defaults["max_pixels"].default,
                        help="reject larger images (checked from the header, before decoding)")
    parser.add_argument("--min-side", type=int, default=defaults["min_side"].default,
                        help="reject images whose shorter side is smaller")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"].default,
                        help="same-size images per decomposition call (0: 1 on CPU, 16 on GPU)")
    parser.add_argument("--structure-step", type=int,
                        default=defaults["structure_step"].default,
                        help="store the structure layer quantised to multiples of this step: "
                        "every level within step // 2 of the 8-bit layer, for fewer bytes "
                        "(1: lossless; default %(default)s: within 2 levels, a sample about "
                        "1.9x the stored JPEG instead of 2.6x)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: worker processes on this machine; ray: Ray tasks on the "
                        "cluster at --address (pip install 'stexture[ray]')")
    parser.add_argument("--workers", type=int, default=1,
                        help="local engine: worker processes (each gets cores/workers Numba "
                        "threads)")
    add_ray_address_argument(parser)
    parser.add_argument("--cpus-per-task", type=float, default=1.0,
                        help="ray engine: cores reserved by each task")
    parser.add_argument("--gpus-per-task", type=float, default=None,
                        help="ray engine: GPUs reserved by each shard task, fractions allowed "
                        "(default 1 with --device cuda, else 0)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="ray engine: retries of a failed task before its slice counts "
                        "as failed")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete what an earlier run wrote in OUT and start over")
    add_storage_arguments(parser)


def _silent(line: str) -> None:
    """--quiet: the engines' progress lines ("resuming: ...") go nowhere."""


def run(args: argparse.Namespace) -> int:
    settings = ShardSettings(
        method=args.method, params=parse_params(args.method, args.param), device=args.device,
        size=args.size, image_format=args.image_format, quality=args.quality,
        val_fraction=args.val_fraction, shard_size=args.shard_size, max_pixels=args.max_pixels,
        min_side=args.min_side, batch_size=args.batch_size,
        structure_step=args.structure_step,
    )
    if args.engine == "local":
        ray_only = [flag for flag, value in (("--address", args.address),
                                             ("--gpus-per-task", args.gpus_per_task))
                    if value is not None]
        if ray_only:
            raise ValueError(f"{', '.join(ray_only)} is for --engine ray")
        run_engine = partial(write_dataset, workers=args.workers)
    else:
        run_engine = partial(write_dataset_ray, address=args.address,
                             cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                             max_retries=args.max_retries)
    try:
        with storage_session(args, (args.src, args.out)):
            summary = run_engine(
                args.src, args.out, settings, overwrite=args.overwrite,
                show_progress=not args.quiet,
                log=_silent if args.quiet else partial(print_line, file=sys.stderr))
    except DecomposeInterrupted as exc:
        print_text(f"stexture decompose: {exc}", sys.stderr)
        return 130
    except DecomposeFailed as exc:
        print_text(f"stexture decompose: {exc}", sys.stderr)
        return 1
    except ImportError as exc:  # the ray engine without ray installed
        print_text(f"stexture decompose: error: {exc}", sys.stderr)
        return 2
    except OSError as exc:  # a disk full, a name too long, a permission: the system's words
        print_text(f"stexture decompose: error: {exc}", sys.stderr)
        return 1
    print_text(summary.text())
    return 0
