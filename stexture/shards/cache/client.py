"""Where the cache lives and the fsspec client of a remote folder (held over a fork)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..storage import storage_options_for


def default_cache_dir() -> Path:
    """Where shards are cached when no ``cache_dir`` is given.

    ``$STEXTURE_CACHE_DIR`` if set; else the user's cache folder: ``$XDG_CACHE_HOME`` or
    ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows,
    with ``stexture/shards`` under it.
    """
    explicit = os.environ.get("STEXTURE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stexture" / "shards"


def _folder_name(url: str) -> str:
    """A readable, unique folder name for a remote root: its slug and a hash of the URL."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url).strip("-.")[:80]
    return f"{slug}-{hashlib.sha256(url.encode('utf-8')).hexdigest()[:12]}"



def describe_endpoint(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The storage endpoint ``url`` is read from, for messages: the one in
    ``storage_options``, else (for S3) the environment's, saying which variable, else the
    URL's host."""
    options = storage_options_for(storage_options)
    client = options.get("client_kwargs") or {}
    for value in (client.get("endpoint_url"), options.get("endpoint_url")):
        if value:
            return str(value)
    if url.startswith(("s3://", "s3a://")):
        for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
            if os.environ.get(variable):
                return f"{os.environ[variable]} from {variable}"
        return "the default AWS endpoint: set AWS_ENDPOINT_URL or storage_options="
    return url.split("/")[2] if "://" in url else "?"


def _with_defaults(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """For S3: botocore's own retries off (this cache retries, with its own backoff, and
    fails fast on an endpoint it never reached) and a connect timeout of 5 s, unless the
    caller set them."""
    if not url.startswith(("s3://", "s3a://")):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", 5)
    config.setdefault("retries", {"total_max_attempts": 1})
    return {**options, "config_kwargs": config}


def open_filesystem(url: str, storage_options: dict[str, Any] | None = None
                    ) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path in it, with ``storage_options``
    (endpoint, credentials) over the defaults of
    :data:`~stexture.shards.storage.STORAGE_OPTIONS_VARIABLE` (for S3 the environment's
    ``AWS_ENDPOINT_URL``, ... apply too).

    Raises
    ------
    ValueError
        fsspec (or the protocol's package) is not installed: names the extra to install.
    """
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ValueError(f"{url} is a URL: reading shards from a URL needs fsspec "
                         "(pip install 'stexture[storage]')") from None
    try:
        return url_to_fs(url, **_with_defaults(url, storage_options_for(storage_options)))
    except ImportError as exc:
        raise ValueError(f"{url}: {exc} (pip install 'stexture[storage]')") from None


# fsspec empties its instance cache in a forked child, so the parent's clients become
# garbage there, and collecting them closes their pooled connections through the event loop's
# epoll instance, which the child shares with the parent: that unregisters the parent's
# sockets, and the parent's next request on one hangs until a timeout (15 s seen). Holding
# the instances over the fork keeps the child from ever collecting them.
_HELD_OVER_FORK: list[Any] = []


def _hold_clients_over_fork() -> None:
    spec = sys.modules.get("fsspec.spec")
    classes = getattr(spec, "_registered_classes", None)
    if classes is None:
        return
    try:
        _HELD_OVER_FORK[:] = [client for cls in list(classes)
                              for client in list(getattr(cls, "_cache", {}).values())]
    except Exception:  # noqa: BLE001 - a private structure of fsspec changed: do nothing
        _HELD_OVER_FORK.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_clients_over_fork)

