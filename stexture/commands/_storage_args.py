"""``--storage-option KEY=VALUE`` and ``--endpoint-url``: the fsspec options of the URLs a
command reads and writes, and the one-line errors of a storage that cannot be reached.

Every command that takes a shard folder (or a source) at a URL adds these options with
:func:`add_storage_arguments` and runs inside :func:`storage_session`, which makes the
options the defaults of every URL the command, its worker processes and its Ray tasks open
(:func:`stexture.shards.storage.using_storage_options`), checks first that each URL's
endpoint answers, and turns a storage library's error into one line naming the URL.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..shards import storage
from ..shards.cache.client import describe_endpoint, open_filesystem
from ..shards.cache.errors import _cannot_connect, _one_line
from ..shards.format.manifest import _cannot_reach_host

__all__ = ["add_storage_arguments", "parse_storage_options", "storage_options_of",
           "storage_session"]

# modules whose exceptions are a storage's (the fsspec back ends and their HTTP clients):
# a command turns them into one line instead of a traceback
_STORAGE_MODULES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "aiohttp", "fsspec",
                    "urllib3", "requests", "google")
# options that are always text, whatever they look like (an access key of digits, a
# secret that reads "true")
_TEXT_OPTIONS = frozenset({"key", "secret", "token", "username", "password", "profile",
                           "endpoint_url", "region_name"})


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) and ``--endpoint-url URL``."""
    group = parser.add_argument_group(
        "object storage", "for a folder or source at an fsspec URL (s3://, gs://, "
        "https://); the usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, ...) applies as well, and is the better place for secrets "
        "(a command line is visible to other users of the machine)")
    group.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an fsspec storage option, repeatable: the VALUE is read as "
                       "JSON when it is JSON (true, 3, {\"a\": 1}), else as text (key, "
                       "secret, token, profile, endpoint_url and region_name always as "
                       "text); dots in KEY nest (client_kwargs.region_name=eu-west-1)")
    group.add_argument("--endpoint-url", default=None, metavar="URL",
                       help="the S3 endpoint (MinIO, SeaweedFS, Ceph, R2, ...): short for "
                       "--storage-option client_kwargs.endpoint_url=URL")


def _value(text: str) -> Any:
    """``text`` as JSON when it parses (numbers, booleans, null, objects), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_storage_options(pairs: Iterable[str], endpoint_url: str | None = None
                          ) -> dict[str, Any]:
    """``["anon=false", "client_kwargs.endpoint_url=http://h:9000"]`` -> the nested dict
    ``{"anon": False, "client_kwargs": {"endpoint_url": "http://h:9000"}}``.

    Parameters
    ----------
    pairs : iterable of str
        ``KEY=VALUE`` each; the value is JSON when it parses as JSON, else the text as it
        is (so a URL stays a string), and always the text for a credential or a name
        (``key``, ``secret``, ``token``, ``profile``, ``endpoint_url``, ...); dots in
        ``KEY`` nest dicts.
    endpoint_url : str, optional
        ``--endpoint-url``: set as ``client_kwargs.endpoint_url``.

    Returns
    -------
    dict
        The options, for fsspec's ``storage_options``.

    Raises
    ------
    ValueError
        A pair without ``=``, an empty key or key part, a key given twice, or a key that is
        both a value and a group of nested keys (naming the option).
    """
    options: dict[str, Any] = {}
    items = [(pair, *pair.partition("=")) for pair in pairs]
    if endpoint_url is not None:
        items.append((f"--endpoint-url {endpoint_url}", "client_kwargs.endpoint_url", "=",
                      endpoint_url))
    for given, key, sep, text in items:
        if not sep:
            raise ValueError(f"--storage-option {given!r} is not of the form KEY=VALUE")
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--storage-option {given!r}: the key {key!r} has an empty "
                             "part")
        node = options
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--storage-option {given!r}: "
                                 f"{'.'.join(parts[:depth + 1])} is given a value already")
        if parts[-1] in node:
            raise ValueError(f"--storage-option {given!r}: {key} is given twice")
        node[parts[-1]] = text if parts[-1] in _TEXT_OPTIONS else _value(text)
    return options


def storage_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a command's parsed ``--storage-option`` and ``--endpoint-url``."""
    return parse_storage_options(getattr(args, "storage_option", None) or [],
                                 getattr(args, "endpoint_url", None))


def _unreachable(url: str, detail: str) -> ConnectionError:
    return ConnectionError(f"cannot reach the storage of {url} (endpoint "
                           f"{describe_endpoint(url)}): {detail}")


def check_reachable(url: str) -> None:
    """One request to the storage of ``url`` (with the options in effect, no retries, a
    short connect timeout), so that an endpoint that does not answer or refuses the
    credentials fails the command at once, in a line that names the URL and the endpoint.

    A missing object is no error here (an output folder is made later), nor is a refusal
    (credentials allowed a prefix of the bucket only may not look at the bucket itself: the
    command's own requests say what they may not do); protocols other than ``s3`` and
    ``http(s)`` are not probed.

    Raises
    ------
    ConnectionError
        The endpoint did not answer.
    PermissionError
        No credentials at all.
    """
    if url.startswith(("http://", "https://")):
        if _cannot_reach_host(url):
            raise _unreachable(url, "no connection")
        return
    if not url.startswith(("s3://", "s3a://")):
        return
    fs, path = open_filesystem(url)
    bucket = path.split("/", 1)[0]
    try:
        fs.info(bucket)
    except (FileNotFoundError, PermissionError):
        return  # reached: what is missing or refused is the command's to report (or fix)
    except Exception as exc:  # noqa: BLE001 - sorted below; storage errors vary by back end
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "NoCredentialsError" in names:
            raise PermissionError(
                f"no credentials for {url}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or --storage-option key=... --storage-option "
                "secret=... (or anon=true for a public bucket)") from None
        if _cannot_connect(exc) or isinstance(exc, (ConnectionError, TimeoutError)):
            raise _unreachable(url, _one_line(exc)) from None
        # anything else (a 5xx, a throttle) is left to the command, which retries


def _is_storage_error(exc: BaseException) -> bool:
    """An exception of a storage library that is not an ``OSError`` (which the command
    frame prints in one line already)."""
    if isinstance(exc, OSError):
        return False
    module = type(exc).__module__.split(".")[0]
    return module in _STORAGE_MODULES


def _storage_error(exc: BaseException, urls: list[str]) -> OSError:
    where = ", ".join(urls) or "a URL"
    if _cannot_connect(exc) and urls:
        return _unreachable(urls[0], _one_line(exc))
    return OSError(f"storage error on {where}: {_one_line(exc)}")


@contextmanager
def storage_session(args: argparse.Namespace, locations: Iterable[Any]) -> Iterator[None]:
    """Run a command's work inside: its ``--storage-option``/``--endpoint-url`` options are
    the defaults of every URL it (and its workers) opens, each URL among ``locations``
    (paths or URLs, ``None`` skipped) is checked to be reachable first
    (:func:`check_reachable`), and a storage library's own exception (a botocore error,
    say) becomes an ``OSError`` of one line naming the URLs."""
    options = storage_options_of(args)
    urls = [str(loc) for loc in locations if loc is not None and storage.is_url(str(loc))]
    if options and not urls:
        raise ValueError("--storage-option and --endpoint-url are for a folder or source "
                         "at a URL (s3://bucket/shards); this command was given none")
    with storage.using_storage_options(options):
        try:
            for url in dict.fromkeys(urls):
                check_reachable(url)
            yield
        except Exception as exc:
            if _is_storage_error(exc):
                raise _storage_error(exc, urls) from None
            raise
