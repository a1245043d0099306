"""``stexture sweep SHARDS``: train one model per (k, seed) and report the best k.

The options that set up the runs are generated from the fields of
:class:`~stexture.training.config.SweepConfig` (flag, type, default, choices and help from
each field); those that say where and how the sweep runs are written out here.
"""

from __future__ import annotations

import argparse
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from ..shards import storage
from ..training.config import SweepConfig
from ..training.runner import sweep
from ._output import print_line
from ._params import add_ray_address_argument
from ._storage_args import add_storage_arguments, storage_session


def _flag(setting: Field) -> str:
    return setting.metadata.get("flag", "--" + setting.name.replace("_", "-"))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`SweepConfig` field, into ``args.<field name>``: ``--x`` for a
    flag that is off by default, ``--x`` / ``--no-x`` for one that is on, else ``--x VALUE``
    of the field's type (or the metadata's)."""
    for setting in fields(SweepConfig):
        meta, default, flag = setting.metadata, setting.default, _flag(setting)
        options: dict[str, Any] = {"dest": setting.name, "default": default,
                                   "help": meta["help"]}
        if isinstance(default, bool):
            options["action"] = (argparse.BooleanOptionalAction if default
                                 else "store_true")
        else:
            options["type"] = meta.get("type", type(default))
            if "choices" in meta:
                options["choices"] = meta["choices"]
            else:  # argparse would name it after the field, not the flag
                options["metavar"] = flag.lstrip("-").replace("-", "_").upper()
            if isinstance(default, tuple):  # shown as it is typed
                options["help"] += f" (default: {','.join(f'{v:g}' for v in default)})"
        parser.add_argument(flag, **options)


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The :class:`SweepConfig` of parsed options (those of :func:`add_config_arguments`)."""
    values = {}
    for setting in fields(SweepConfig):
        convert = setting.metadata.get("from_cli", lambda value: value)
        values[setting.name] = convert(getattr(args, setting.name))
    return SweepConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", type=storage.location,
                        help="shard folder written by `stexture decompose`: a local path or "
                        "an fsspec URL (s3://bucket/shards, read through the shard cache in "
                        "STEXTURE_CACHE_DIR, else the user's cache folder)")
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("runs"),
                        help="output folder; rerun with the same settings to resume")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                        help="where to train (auto: the GPU when there is one)")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
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
    add_storage_arguments(parser)


def _load_check(path: Path) -> None:
    """``ValueError`` naming ``path`` when torch cannot load it as weights: torch's loader
    answers a file it did not write with whatever its parser hit (an ``IndexError`` for a
    text file, an ``UnpicklingError``, a ``RuntimeError``), which says nothing of the file."""
    import torch  # the command module is imported for --help too: torch only when run

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any failure of torch's parser means the same)
        raise ValueError(f"--init-weights {path}: not a weights file torch can load "
                         f"(a state_dict saved with torch.save); torch says "
                         f"{type(exc).__name__}: {exc}") from exc


def check_paths(args: argparse.Namespace) -> None:
    """The paths a sweep reads and writes, checked before the shards are read: ``--out``
    must be a folder (or not exist yet), ``--init-weights`` a file torch loads."""
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; the sweep writes a folder of runs "
                         "there: name a folder")
    if args.init_weights is not None and Path(args.init_weights).is_file():
        _load_check(Path(args.init_weights))  # a missing one: the sweep says so


def run(args: argparse.Namespace) -> int:
    check_paths(args)
    with storage_session(args, [args.shards]):
        return _sweep(args)


def _sweep(args: argparse.Namespace) -> int:
    summary = sweep(
        args.shards, config_from_args(args), out=args.out, device=args.device,
        workers=args.workers, engine=args.engine, address=args.address,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        log=None if args.quiet else print_line, progress=not args.quiet, verbose=args.verbose,
    )
    best = summary["best"]
    if best is not None and best.get("gain_over_vanilla") is not None:
        ci = best["gain_ci95"]
        print(f"best k {best['k']:g}: gain over vanilla {best['gain_over_vanilla']:+.4f}"
              + ("" if ci is None else f" (paired 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}])"))
    return 0
