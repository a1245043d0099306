"""A bounded local cache of remote shards: the loaders ask it for a local path.

Shards at an fsspec URL (``s3://bucket/shards``, ``gs://...``, ``https://...``) are
downloaded once per node into a cache folder and read from there, so the loaders only ever
see local files. For each remote folder the cache keeps, under ``cache_dir``::

    <url-slug>-<hash>/shards/NAME           verified shards, read by the loaders
    <url-slug>-<hash>/shards/NAME.partial   a download in progress (never read)
    <url-slug>-<hash>/meta/NAME.json        what was verified: sha256, size, inode, times
    <url-slug>-<hash>/locks/NAME.lock       one lock file per shard (never removed)
    <url-slug>-<hash>/cache.lock            taken while room is made for a download

What it guarantees:

- A shard is used only once its bytes matched the manifest's SHA-256: a download goes to
  ``NAME.partial`` (preallocated, so a full disk shows at once), is hashed as it arrives,
  flushed to disk and only then renamed to ``NAME``. A killed download leaves a
  ``.partial`` that is removed, never read; a cached file changed since it was verified
  (its size, inode or change time differ from the record in ``meta/``) is hashed again,
  and removed and fetched again when it no longer matches.
- One download per shard per node: every process (DataLoader workers, ranks on one node)
  takes the shard's file lock (``fcntl.flock``), exclusively to download it, shared while
  it uses it; a second process waiting for the same shard finds it verified and reads it.
- At most ``cache_limit`` bytes: before a download, shards are evicted, the least needed
  first (not in the order :meth:`ShardCache.prefetch` was given, least recently used
  first, then those needed last); a shard that any process has pinned, or is downloading,
  is never evicted. When nothing more can be evicted the request fails with a message
  saying what holds the room.
- Transient errors (connection refused or reset, timeouts, 5xx) are retried with
  exponential backoff, then :class:`ShardFetchError` names the shard and its URL; a missing
  object or refused credentials fail at once. An endpoint that was never reached fails at
  the first try with a one-line :class:`StorageUnreachableError`, instead of retrying.
- A cache folder that cannot be written, or is full, gives :class:`CacheFolderError`
  saying so and what to do.

Locks are POSIX ``flock`` locks: the cache folder must be on a local file system (not NFS).
"""

from .client import default_cache_dir, open_filesystem
from .core import ShardCache
from .errors import (
    CacheFolderError,
    ShardChecksumError,
    ShardFetchError,
    ShardRef,
    StorageUnreachableError,
)

__all__ = [
    "CacheFolderError",
    "ShardCache",
    "ShardChecksumError",
    "ShardFetchError",
    "ShardRef",
    "StorageUnreachableError",
    "default_cache_dir",
    "open_filesystem",
]
