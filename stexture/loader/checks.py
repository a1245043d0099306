"""Checks of the loaders' arguments shared by :func:`~stexture.loader.make_loader` and
:func:`~stexture.loader.make_eval_loader`."""

from __future__ import annotations


def _check_seed(seed: int) -> None:
    if int(seed) != seed or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")


def _check_sizes(*, least: int | None = None, **sizes: int) -> None:
    for name, value in sizes.items():
        low = least if least is not None else (0 if name == "num_workers" else 1)
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
