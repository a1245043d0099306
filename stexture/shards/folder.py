"""An opened shard folder: its manifest and its index, each read once and then shared.

A sweep follows one folder through its loaders, its runs, the training subset and the
class weights; :class:`ShardFolder` is what they pass around instead of the path, so that
``manifest.json`` is read and checked once and ``index.csv`` at most once.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from pathlib import Path

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
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    @classmethod
    def open(cls, source: str | Path | Manifest | ShardFolder,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> ShardFolder:
        """The folder ``source`` names: a path (its manifest read and checked now), a
        :class:`Manifest`, or a :class:`ShardFolder` (returned as it is).

        Parameters
        ----------
        source : str, Path, Manifest or ShardFolder
            The folder.
        max_pixels : int
            The most pixels a layer may declare when the shards are read (for a path).

        Returns
        -------
        ShardFolder
            The opened folder.
        """
        if isinstance(source, ShardFolder):
            return source
        if isinstance(source, Manifest):
            return cls(source)
        return cls(read_manifest(source, max_pixels))

    @property
    def root(self) -> Path:
        """The folder's path."""
        return self.manifest.root

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
        return read_index(self.root)

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
        working folder, a Ray Tune trial); what was read is kept, nothing is read again."""
        folder = ShardFolder(replace(self.manifest, root=self.root.resolve()))
        if "index" in self.__dict__:
            folder.__dict__["index"] = self.index
        return folder

    def __repr__(self) -> str:
        return f"ShardFolder({str(self.root)!r})"
