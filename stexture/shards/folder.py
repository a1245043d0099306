"""An opened shard folder: its manifest and its index, each read once and then shared.

A sweep follows one folder through its loaders, its runs, the training subset and the
class weights; :class:`ShardFolder` is what they pass around instead of the path, so that
``manifest.json`` is read and checked once and ``index.csv`` at most once.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from . import storage
from .format import DEFAULT_MAX_PIXELS, Manifest, read_index, read_manifest

__all__ = ["ShardFolder"]


class ShardFolder:
    """A shard folder written by ``stexture decompose``, opened once.

    Parameters
    ----------
    manifest : Manifest
        The folder's manifest, as :func:`~stexture.shards.format.read_manifest` read it.

    Attributes
    ----------
    manifest : Manifest
        The manifest (classes, splits, shards, method).

    Examples
    --------
    >>> folder = ShardFolder.open("shards/")  # doctest: +SKIP
    >>> loader = stexture.make_loader(folder, k=0.8)  # doctest: +SKIP
    >>> remote = ShardFolder.open("s3://bucket/shards", storage_options={
    ...     "client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}})  # doctest: +SKIP
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @classmethod
    def open(cls, source: str | Path | Manifest | ShardFolder,
             max_pixels: int = DEFAULT_MAX_PIXELS, *,
             storage_options: dict[str, Any] | None = None) -> ShardFolder:
        """The folder ``source`` names: a path or an fsspec URL (its manifest read and
        checked now), a :class:`Manifest`, or a :class:`ShardFolder` (returned as it is).

        Parameters
        ----------
        source : str, Path, Manifest or ShardFolder
            The folder: a local path, or a URL such as ``s3://bucket/shards``,
            ``gs://...``, ``https://...`` (``file://`` is the local folder).
        max_pixels : int
            The most pixels a layer may declare when the shards are read (for a path).
        storage_options : dict, optional
            fsspec options for a URL (for S3: ``{"client_kwargs": {"endpoint_url": ...},
            "key": ..., "secret": ...}``); kept with the manifest, so the loaders and the
            shard cache read the shards with them. The environment applies as well
            (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...). For a :class:`Manifest` or a
            :class:`ShardFolder` read without them, they replace its (none).

        Raises
        ------
        FileNotFoundError
            No ``manifest.json`` there (for a URL: no such object or bucket).
        PermissionError
            The storage refused the credentials.
        StorageUnreachableError
            The URL's endpoint cannot be reached (one line, at the first try).
        ValueError
            The manifest is not one this stexture reads.

        Returns
        -------
        ShardFolder
            The opened folder.
        """
        if isinstance(source, ShardFolder):
            if storage_options and not source.manifest.storage_options:
                return cls(_with_options(source.manifest, storage_options))
            return source
        if isinstance(source, Manifest):
            return cls(_with_options(source, storage_options))
        return cls(read_manifest(source, max_pixels, storage_options=storage_options))

    @property
    def root(self) -> storage.Location:
        """The folder: its path, or its URL (a ``str``)."""
        return self.manifest.root

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """The fsspec options its shards are read with (a URL folder)."""
        return self.manifest.storage_options

    @property
    def classes(self) -> list[str]:
        """The class names, in class-index order."""
        return self.manifest.classes

    @property
    def num_classes(self) -> int:
        """How many classes the folder has."""
        return self.manifest.num_classes

    @cached_property
    def index(self) -> list[dict[str, str]]:
        """The rows of ``index.csv`` (``key``, ``split``, ``shard``, ``cls``), read on first
        use; ``FileNotFoundError`` when the folder has none."""
        return read_index(self.root, storage_options=self.storage_options)

    def keys_by_class(self, split: str) -> dict[int, list[str]]:
        """The keys of ``split`` by class index, in index order.

        Parameters
        ----------
        split : str
            The split (``"train"`` or ``"val"``).

        Returns
        -------
        dict of int to list of str
            Each class that has samples in ``split``, with their keys.
        """
        by_class: dict[int, list[str]] = {}
        for row in self.index:
            if row["split"] == split:
                by_class.setdefault(int(row["cls"]), []).append(row["key"])
        return by_class

    def resolved(self) -> ShardFolder:
        """The same folder with an absolute root (for a process that runs in another
        working folder, a Ray Tune trial); what was read is kept, nothing is read again. A
        URL is absolute already."""
        if not isinstance(self.root, Path):
            return self
        folder = ShardFolder(replace(self.manifest, root=self.root.resolve()))
        if "index" in self.__dict__:
            folder.__dict__["index"] = self.index
        return folder

    def __repr__(self) -> str:
        return f"ShardFolder({str(self.root)!r})"


def _with_options(manifest: Manifest, storage_options: dict[str, Any] | None) -> Manifest:
    """``manifest`` with ``storage_options`` for its URL (given, and it has none)."""
    if not storage_options or not manifest.is_remote or manifest.storage_options:
        return manifest
    return replace(manifest, storage_options=dict(storage_options))
