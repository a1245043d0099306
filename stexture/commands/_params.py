"""Options shared by several commands, and parsing ``--param name=value`` into method
parameters."""

from __future__ import annotations

import argparse
from typing import Any

from ..smoothing import METHODS, get_method


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method``, ``--param NAME=VALUE`` (repeatable) and ``--device``."""
    parser.add_argument("--method", default="rtv", choices=sorted(METHODS),
                        help="smoothing method: rtv (relative total variation), rgf (rolling "
                        "guidance filter) or tv (total variation)")
    defaults = "; ".join(
        f"{name}: " + ", ".join(f"{p}={v}" for p, v in METHODS[name].defaults.items())
        for name in sorted(METHODS))
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter of the method, repeatable (e.g. --param lam=0.02); "
                        f"the defaults are {defaults}")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="where to run the decomposition (auto: the GPU when there is one)")


def add_ray_address_argument(parser: argparse.ArgumentParser) -> None:
    """``--address``: the Ray cluster a command with ``--engine ray`` joins."""
    parser.add_argument("--address", default=None,
                        help="ray engine: the cluster to join (auto, HOST:6379, "
                        "ray://HOST:10001); default RAY_ADDRESS, else a new local one")


def parse_params(method: str, pairs: list[str]) -> dict[str, Any]:
    """``["lam=0.02", "n_iter=3"]`` -> ``{"lam": 0.02, "n_iter": 3}``, typed like the defaults."""
    defaults = get_method(method).defaults
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r} is not of the form NAME=VALUE")
        if name not in defaults:
            raise ValueError(
                f"unknown parameter {name!r} for method {method!r}; it takes {', '.join(defaults)}"
            )
        kind = type(defaults[name])
        try:
            params[name] = kind(text) if kind is not bool else text.lower() in ("1", "true", "yes")
        except ValueError:
            raise ValueError(f"--param {name}={text!r} is not a valid {kind.__name__}") from None
    return params
