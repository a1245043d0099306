"""The default fsspec options of every URL a stexture process opens, from the environment
variable :data:`STORAGE_OPTIONS_VARIABLE` (a JSON object), which the ``stexture`` command sets
from ``--storage-option`` so that its worker processes and Ray tasks see them too.

A module of its own, importing nothing of stexture, so that the ``pipe:`` streamer
(:mod:`stexture._stream`) starts without loading the shard writer. Re-exported by
:mod:`stexture.shards.storage`, where the rest of the storage layer is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["STORAGE_OPTIONS_VARIABLE", "default_storage_options", "storage_options_for",
           "using_storage_options"]

#: the environment variable with the default fsspec options (a JSON object) of every URL
#: opened in this process and in the processes it starts
STORAGE_OPTIONS_VARIABLE = "STEXTURE_STORAGE_OPTIONS"


def default_storage_options() -> dict[str, Any]:
    """The default fsspec options of :data:`STORAGE_OPTIONS_VARIABLE` (``{}`` when unset).

    Raises
    ------
    ValueError
        The variable is not a JSON object (names the variable, never its value, which may
        hold a secret).
    """
    text = os.environ.get(STORAGE_OPTIONS_VARIABLE, "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{STORAGE_OPTIONS_VARIABLE} is not valid JSON ({exc.msg} at "
                         f"character {exc.pos}): set it to a JSON object of fsspec "
                         "options, or unset it") from None
    if not isinstance(options, dict):
        raise ValueError(f"{STORAGE_OPTIONS_VARIABLE} must be a JSON object of fsspec "
                         f"options, not a {type(options).__name__}")
    return options


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` on top; nested dicts (``client_kwargs``) merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def storage_options_for(options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fsspec options a URL is opened with: ``options`` over the defaults of
    :data:`STORAGE_OPTIONS_VARIABLE` (nested dicts merged key by key)."""
    return _merged(default_storage_options(), dict(options or {}))


@contextmanager
def using_storage_options(options: dict[str, Any] | None) -> Iterator[None]:
    """Within the block, ``options`` are the defaults of every URL this process opens, and
    of the worker processes and Ray tasks it starts (through the environment, as
    :data:`STORAGE_OPTIONS_VARIABLE`; the previous value is restored afterwards). No
    options: nothing changes."""
    if not options:
        yield
        return
    previous = os.environ.get(STORAGE_OPTIONS_VARIABLE)
    os.environ[STORAGE_OPTIONS_VARIABLE] = json.dumps(storage_options_for(options))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(STORAGE_OPTIONS_VARIABLE, None)
        else:
            os.environ[STORAGE_OPTIONS_VARIABLE] = previous
