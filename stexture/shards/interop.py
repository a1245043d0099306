"""Reading stexture shards with the tools people already use on WebDataset shards.

A shard folder is plain WebDataset, so `webdataset`, `wids` and Hugging Face `datasets` read
it as it is; what they cannot know is how the ``structure.dzst`` field is encoded and that
the texture is ``image - structure``. This module tells them, with the decoders of
:mod:`.format` (the one reader of each field), so every client gets the same pixels as
:func:`stexture.shards.decode_sample`:

- webdataset: ``wds.WebDataset(urls).decode(*wds_handlers()).map(add_texture)``, with
  ``urls = webdataset_urls(folder, split)`` (for a folder in object storage, ``pipe:`` URLs
  that stream each shard through stexture's storage layer);
- wids: the writer puts a wids index ``{split}.wids.json`` beside ``manifest.json``
  (:func:`write_wids_indexes`), so ``wids.ShardListDataset("shards/train.wids.json",
  transformations=layer_dict)`` opens a split; for an index in object storage
  (``s3://``, ``gs://``) call :func:`wids_use_fsspec` first;
- Hugging Face ``datasets``: :func:`hf_dataset` loads a split with the class as a
  ``ClassLabel`` and decodes image, structure and texture on access.

None of these packages is imported here (``datasets`` only inside :func:`hf_dataset`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .format import (
    IMAGE_FIELDS,
    STRUCTURE_FIELDS,
    decode_rgb,
    decode_sample,
    decode_structure,
    group_samples,
    iter_tar_samples,
    read_manifest,
    read_tar_members,
    structure_field,
    texture_of,
)

__all__ = [
    "WIDS_INDEX_SUFFIX",
    "add_texture",
    "hf_dataset",
    "layer_dict",
    "wds_handlers",
    "webdataset_urls",
    "wids_index_name",
    "wids_index_names",
    "wids_use_fsspec",
    "write_wids_indexes",
]

WIDS_INDEX_SUFFIX = ".wids.json"
# the wids dataset description format this writes ("wids_version" in the file)
_WIDS_VERSION = 1


# ---------------------------------------------------------------- webdataset


def _field_of(key: str) -> str:
    # webdataset hands a handler the field name with a leading dot (".structure.dzst")
    return key.lstrip(".").lower()


def _decode_image_field(key: str, data: bytes) -> np.ndarray | None:
    return decode_rgb(data) if _field_of(key) in IMAGE_FIELDS else None


def _decode_structure_field(key: str, data: bytes) -> np.ndarray | None:
    field = _field_of(key)
    return decode_structure(data, field) if field in STRUCTURE_FIELDS else None


def wds_handlers() -> list[Callable[[str, bytes], np.ndarray | None]]:
    """Handlers for ``webdataset``'s ``.decode(...)`` that read stexture's layers.

    The stored image (``jpg``/``png``) and the structure (``structure.dzst``, or
    ``structure.webp`` of format version 1) become uint8 ``HxWx3`` arrays, decoded exactly
    as :func:`stexture.shards.decode_sample` does; webdataset's own default handlers still
    decode ``cls`` (int) and ``json`` (dict, with ``class_name``). Follow with
    ``.map(add_texture)`` for the texture::

        dataset = (wds.WebDataset(urls, shardshuffle=False)
                   .decode(*stexture.shards.wds_handlers())
                   .map(stexture.shards.add_texture))

    Returns
    -------
    list of callable
        ``handler(key, data)`` as webdataset calls it: the decoded array, or ``None`` for a
        field it does not handle.
    """
    return [_decode_image_field, _decode_structure_field]


def add_texture(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with ``"texture"`` added: ``image - structure`` as int16 ``HxWx3``.

    For a sample decoded with :func:`wds_handlers` (``.map(add_texture)``). ``ValueError``
    when the sample lacks an image or a structure field, or when they are not both uint8
    arrays of one shape (an image decoded to float by another handler, say).
    """
    key = sample.get("__key__", "<no key>")
    image_field = next((f for f in IMAGE_FIELDS if f in sample), None)
    if image_field is None:
        raise ValueError(f"sample {key!r} has no image field ({'/'.join(IMAGE_FIELDS)})")
    image, structure = sample[image_field], sample[structure_field(sample)]
    for name, layer in (("image", image), ("structure", structure)):
        if not isinstance(layer, np.ndarray) or layer.dtype != np.uint8:
            raise ValueError(f"sample {key!r}: the {name} must be decoded to a uint8 array "
                             f"(decode with stexture.shards.wds_handlers()), got "
                             f"{getattr(layer, 'dtype', type(layer).__name__)}")
    if image.shape != structure.shape:
        raise ValueError(f"sample {key!r}: image {image.shape} and structure "
                         f"{structure.shape} differ in shape")
    return {**sample, "texture": texture_of(image, structure)}


# protocols webdataset (1.0) opens itself: a local file, and http(s) through curl
_WDS_NATIVE = ("http://", "https://", "file://")


def webdataset_urls(root: str | Path, split: str = "train", *,
                    storage_options: dict[str, Any] | None = None) -> list[str]:
    """The shards of ``split`` as URLs ``webdataset.WebDataset`` opens, in manifest order.

    A local folder gives its shards' paths, an ``http(s)://`` folder their URLs (webdataset
    reads them with ``curl``); a folder at any other fsspec URL (``s3://``, ``gs://``, ...),
    which webdataset cannot open itself, gives ``pipe:`` URLs,
    ``pipe:PYTHON -m stexture._stream s3://bucket/shards/train-000000.tar``: each
    shard streamed by this Python with fsspec (:mod:`stexture._stream`), so it needs
    ``stexture[storage]`` where the loader runs, and reads the shard with the
    environment's storage options (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... for S3,
    or ``STEXTURE_STORAGE_OPTIONS``, a JSON object): ``storage_options`` reach the
    manifest only (a command line is no place for credentials).

    The plain fsspec URLs are :meth:`Manifest.shard_paths
    <stexture.shards.format.Manifest.shard_paths>` (for fsspec, Hugging Face ``datasets``
    with ``storage_options``, or wids after :func:`wids_use_fsspec`).
    """
    paths = read_manifest(root, storage_options=storage_options).shard_paths(split)
    if not storage.is_url(str(root)) or str(root).startswith(_WDS_NATIVE):
        return paths
    command = f"{shlex.quote(sys.executable)} -m stexture._stream"
    return [f"pipe:{command} {shlex.quote(path)}" for path in paths]


# ---------------------------------------------------------------- one plain dict per sample


def _as_bytes(value: Any) -> Any:
    # wids hands each field over as a file-like object over the tar's bytes
    return value.read() if hasattr(value, "read") else value


def layer_dict(sample: dict[str, Any]) -> dict[str, Any]:
    """Decode a raw sample (bytes per field) into a plain dict of its layers.

    Takes a sample as webdataset yields it undecoded (``{"__key__", "jpg": bytes, ...}``) or
    as wids does (field names with a leading dot, values file-like), so it serves as wids'
    ``transformations=`` and as ``.map(layer_dict)`` after ``wds.WebDataset(urls)``.

    Returns
    -------
    dict
        ``image`` and ``structure`` (uint8 ``HxWx3``), ``texture`` (int16 ``HxWx3``,
        ``image - structure``), ``cls`` (int), ``class_name`` (str), ``json`` (the sample's
        record), and the sample's own ``__key__`` and other ``__...__`` entries. Decoded by
        :func:`stexture.shards.decode_sample`, whose ``ValueError`` names a missing or
        corrupt field.
    """
    meta = {name: value for name, value in sample.items() if name.startswith("__")}
    fields = {name.lstrip("."): _as_bytes(value) for name, value in sample.items()
              if not name.startswith("__")}
    decoded = decode_sample({"__key__": meta.get("__key__", "<no key>"), **fields})
    return {**meta, "image": decoded.image, "structure": decoded.structure,
            "texture": decoded.texture, "cls": decoded.cls,
            "class_name": decoded.record.get("class_name"), "json": decoded.record}


# ---------------------------------------------------------------- wids


def wids_index_name(split: str) -> str:
    """File name of the wids index of ``split``: ``train.wids.json``."""
    return f"{split}{WIDS_INDEX_SUFFIX}"


def wids_index_names(splits: Iterable[str]) -> set[str]:
    """The wids index names a folder with ``splits`` may hold (the files the writer owns)."""
    return {wids_index_name(split) for split in splits}


def _wids_url(shard: dict[str, Any]) -> str:
    """A shard's reference in a wids index: unique to its content (see
    :func:`write_wids_indexes`); 64 bits of the SHA-256 tell two versions of a shard apart."""
    return f"{shard['name']}#sha256={shard['sha256'][:16]}"


def write_wids_indexes(out: storage.Location, manifest: dict[str, Any]) -> list[str]:
    """Write a wids dataset description per split with shards beside the manifest.

    ``OUT/{split}.wids.json`` holds ``wids_version`` 1, a ``name`` and the ``shardlist``
    (each shard's reference, relative to the index, and its sample count), from the
    ``manifest`` content (as :func:`stexture.shards.output.assemble_manifest` makes it), so
    ``wids.ShardListDataset("OUT/train.wids.json")`` indexes the split. A split without
    shards gets no index (wids refuses an empty shard list). Returns the names written.

    A shard's reference is its file name with the start of its SHA-256 as a URL fragment,
    ``train-000000.tar#sha256=0123456789abcdef`` (:func:`_wids_url`): wids copies every shard,
    local ones too, into its cache under a name made from the whole URL and never looks at the
    source again, so a folder written anew (``decompose --overwrite``) must give its changed
    shards new URLs, or wids serves the old copies. The fragment is not part of the file's
    path: wids reads the same file, and an HTTP client does not send it. (wids' own
    ``cache_dir=`` argument names cached copies by file name alone, the fragment left out:
    with it, a rewritten folder is still served from the old copies; use the default cache
    or ``WIDS_CACHE``.)

    wids (0.1.11) reads member names from the 512-byte tar headers and ignores PAX extended
    headers, so it cannot read a sample whose key is longer than 85 characters (the name
    ``KEY.structure.dzst`` then needs a PAX header); webdataset and ``datasets`` read such
    keys.
    """
    written = []
    for split, entry in manifest["splits"].items():
        if not entry["shards"]:
            continue
        index = {
            "wids_version": _WIDS_VERSION,
            "name": split,
            "description": f"stexture shards, split {split}, method {manifest['method']}; "
                           "see manifest.json",
            "shardlist": [{"url": _wids_url(shard), "nsamples": shard["count"]}
                          for shard in entry["shards"]],
        }
        name = wids_index_name(split)
        storage.write_atomically(
            storage.join(out, name),
            (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        written.append(name)
    return written


# protocols whose wids download (``aws s3 cp``, ``gsutil cp``) takes the URL's fragment
# (#sha256=...) for part of the object's name
_WIDS_FSSPEC_PROTOCOLS = ("s3", "s3a", "gs", "gcs")


def _wids_fetch(storage_options: dict[str, Any] | None, remote: str, local: str) -> None:
    """Download ``remote`` (a wids index or a shard, ``url#sha256=PREFIX``) to ``local``
    through fsspec: the fragment left out of the request and, for a shard, checked against
    the bytes' SHA-256 before the file appears at ``local`` (written to ``local.partial``
    and renamed, so wids never opens a half-written or changed shard)."""
    url, _, fragment = remote.partition("#")
    expected = fragment[len("sha256="):] if fragment.startswith("sha256=") else ""
    digest = hashlib.sha256()
    partial_path = f"{local}{storage.PARTIAL_SUFFIX}"
    try:
        with (storage.open_read(url, storage_options=storage_options) as source,
              open(partial_path, "wb") as copy):
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                copy.write(block)
        if expected and not digest.hexdigest().startswith(expected):
            raise ValueError(f"{url}: its SHA-256 starts {digest.hexdigest()[:len(expected)]}, "
                             f"the wids index says {expected}: the shard changed after the "
                             "index was written")
        os.replace(partial_path, local)
    finally:
        if os.path.exists(partial_path):
            os.unlink(partial_path)


def wids_use_fsspec(storage_options: dict[str, Any] | None = None,
                    protocols: Iterable[str] = _WIDS_FSSPEC_PROTOCOLS) -> None:
    """Make wids download ``s3://`` and ``gs://`` URLs through fsspec, for a wids index
    (``train.wids.json``) in object storage.

    wids (0.1.11) downloads these with ``aws s3 cp`` / ``gsutil cp``, which take the
    ``#sha256=...`` of the index's shard URLs (see :func:`write_wids_indexes`) for part of
    the object's name and fail (``404 ... Key "shards/train-000000.tar#sha256=..." does not
    exist``). After this call wids fetches them with :mod:`stexture.shards.storage`
    (``storage_options`` over the environment's), leaving the fragment out of the request,
    and checks it against the shard's SHA-256. It sets entries of wids' own table of
    download handlers (``wids.wids_dl.default_cmds``), for this process; ``http(s)://``
    URLs need nothing (curl does not send a fragment).

    ::

        stexture.shards.wids_use_fsspec()
        dataset = wids.ShardListDataset("s3://bucket/shards/train.wids.json",
                                        transformations=stexture.shards.layer_dict)

    ``ImportError`` when wids is not installed.
    """
    from wids import wids_dl

    for protocol in protocols:
        wids_dl.default_cmds[protocol] = partial(_wids_fetch, storage_options)


# ---------------------------------------------------------------- Hugging Face datasets


_HF_COLUMNS = ("__key__", "image", "structure", "texture", "cls", "class_name")


def _hf_transform(classes: list[str], batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Decode a batch of rows of ``load_dataset("webdataset", ...)`` into layers."""
    image_field = next(f for f in IMAGE_FIELDS if f in batch)
    layer_field = structure_field(batch)
    rows = []
    for i, key in enumerate(batch["__key__"]):
        image = batch[image_field][i]  # an Image(decode=False) cell: {"bytes", "path"}
        raw = {"__key__": key, image_field: image["bytes"],
               layer_field: batch[layer_field][i], "cls": batch["cls"][i]}
        decoded = decode_sample(raw)
        rows.append({"__key__": key, "image": decoded.image, "structure": decoded.structure,
                     "texture": decoded.texture, "cls": decoded.cls,
                     "class_name": classes[decoded.cls]})
    return {name: [row[name] for row in rows] for name in _HF_COLUMNS}


def _first_sample(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The first raw sample of the shard at ``path`` (a local path or a URL, read up to the
    end of that sample only)."""
    if not storage.is_url(path):
        return next(iter_tar_samples(path))
    with storage.open_read(path, storage_options=storage_options) as f:
        key, fields = next(group_samples(read_tar_members(f), path))
    return {"__key__": key, **fields}


def hf_dataset(root: str | Path, split: str = "train", *,
               cache_dir: str | Path | None = None,
               storage_options: dict[str, Any] | None = None) -> Any:
    """A split of a shard folder as a Hugging Face ``datasets.Dataset``.

    Loads the split's shards (as listed in the manifest) with
    ``load_dataset("webdataset", ...)``, with ``cls`` a ``ClassLabel`` of the manifest's class
    names, and sets a transform that decodes on access, so that
    ``dataset[i]`` is a dict of ``__key__``, ``image`` and ``structure`` (uint8 ``HxWx3``),
    ``texture`` (int16, ``image - structure``), ``cls`` (int) and ``class_name``, the same
    pixels as :func:`stexture.shards.decode_sample`; ``dataset.features["cls"].names`` are
    the class names. ``cache_dir`` is where ``datasets`` keeps its Arrow copy (its default
    cache when ``None``). ``root`` may be an fsspec URL (``s3://bucket/shards``), read with
    ``storage_options`` (over the defaults of
    :func:`~stexture.shards.storage.storage_options_for`), which ``datasets`` is given too.

    Needs ``pip install datasets`` (``ImportError`` saying so otherwise); a missing folder
    or manifest is ``FileNotFoundError``, an unknown split ``ValueError``.
    """
    manifest = read_manifest(root, storage_options=storage_options)
    files = manifest.shard_paths(split)
    if not files:
        raise ValueError(f"split {split!r} of {manifest.root} has no shards")
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("hf_dataset needs Hugging Face datasets: pip install datasets"
                          ) from exc
    # the columns as the webdataset builder would infer them, but with the stored image as
    # bytes (decoded by stexture's reader below) and cls a ClassLabel: given up front, so
    # that no cast rewrites the dataset afterwards
    first = _first_sample(files[0], storage_options)
    image_field = next(f for f in IMAGE_FIELDS if f in first)
    record = json.loads(first["json"])
    features = datasets.Features({
        image_field: datasets.Image(decode=False),
        structure_field(first): datasets.Value("binary"),
        "cls": datasets.ClassLabel(names=manifest.classes),
        "json": datasets.Dataset.from_list([{"json": record}]).features["json"],
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
    })
    dataset = datasets.load_dataset(
        "webdataset", data_files={split: files}, split=split, features=features,
        cache_dir=None if cache_dir is None else str(cache_dir),
        **({"storage_options": storage.storage_options_for(storage_options)}
           if storage.is_url(files[0]) else {}))
    return dataset.with_transform(partial(_hf_transform, manifest.classes))
