"""The shard cache's errors, its shard reference, and which storage errors are
worth a retry; a cache folder's OS errors turned into a clear message."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# errors that no retry can fix: the object or bucket is missing, the credentials are refused
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# class names (anywhere in an exception's MRO) of the transient errors of the fsspec back
# ends that do not derive from OSError: botocore, aiohttp, urllib3, fsspec's own timeout
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "HTTPClientError", "ProxyConnectionError", "IncompleteRead",
    "ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError",
    "ClientOSError", "ServerTimeoutError", "FSTimeoutError", "ProtocolError",
    "ResponseStreamingError",
})
# the subset that means "could not connect at all" (as opposed to "the transfer broke")
_CONNECT_NAMES = frozenset({"EndpointConnectionError", "ConnectTimeoutError",
                            "ProxyConnectionError", "ClientConnectorError"})


class CacheFolderError(OSError):
    """The cache folder cannot be created or written, or it is full."""


class StorageUnreachableError(ConnectionError):
    """The storage endpoint of a remote shard folder was never reached."""


class ShardFetchError(OSError):
    """A shard could not be fetched after the retries (names the shard and its URL)."""


class ShardChecksumError(ValueError):
    """A downloaded shard's bytes do not match the manifest's SHA-256 or size."""


@dataclass(frozen=True)
class ShardRef:
    """A shard as the manifest describes it: its file name, SHA-256 and (if known) size."""

    name: str
    sha256: str
    size: int | None = None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _TRANSIENT_NAMES:
        return True
    # s3fs turns the S3 error codes into OSError subclasses (the permanent ones above);
    # a plain OSError is a 5xx, a throttle or a broken connection
    return type(exc) is OSError


def _cannot_connect(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionRefusedError, TimeoutError)):
        return True
    return bool({cls.__name__ for cls in type(exc).__mro__} & _CONNECT_NAMES)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"



@contextmanager
def _local_errors(folder: Path, what: str) -> Iterator[None]:
    """Turn a read-only, missing-permission or full cache folder into a clear message."""
    try:
        yield
    except CacheFolderError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CacheFolderError(
                exc.errno, f"the shard cache folder {folder} cannot be written ({what}: "
                f"{exc.strerror}); pass cache_dir= (or set STEXTURE_CACHE_DIR to) a writable "
                "folder") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheFolderError(
                exc.errno, f"the shard cache folder {folder} is full ({what}: {exc.strerror}; "
                f"{_free_bytes(folder)} bytes free); free space there, pass a smaller "
                "cache_limit= or another cache_dir=") from None
        if exc.errno in (errno.ENOTDIR, errno.EEXIST) and what == "creating it":
            raise CacheFolderError(
                exc.errno, f"the shard cache folder {folder} cannot be created: "
                f"{exc.strerror} (a file is in the way); pass another cache_dir=") from None
        raise


def _free_bytes(folder: Path) -> int | str:
    for candidate in (folder, *folder.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return "?"

