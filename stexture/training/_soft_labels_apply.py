"""Labelling (:mod:`.soft_labels`): each sample's two views through its fold's teachers,
written shard by shard."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..loader.batch import IMAGENET_MEAN, IMAGENET_STD, layer_view
from ..shards import storage
from ..shards.format import (
    Manifest,
    decode_sample,
    iter_tar_samples,
    write_tar,
)
from ..shards.labels import encode_label_sample
from ..shards.storage import sha256_of
from ._soft_labels_progress import _Progress
from .teachers import label_maps
from .trainer import Log

_BATCH = 32


def _views(image: np.ndarray, structure: np.ndarray, input_size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The structure layer and the texture view of one image, resized so that the shorter
    side is ``input_size`` (pixel-area averaging when shrinking)."""
    height, width = image.shape[:2]
    scale = input_size / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    texture = layer_view(image[None], structure[None], "texture")[0]
    return tuple(cv2.resize(layer, size, interpolation=interpolation)
                 for layer in (structure, texture))


def _to_input(layers: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 ``H x W x 3`` layers -> the normalised ``B x 3 x H x W`` float batch the
    loader would give."""
    x = torch.from_numpy(np.stack(layers)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def _label_all(manifest: Manifest, state: _Progress,
               teachers: list[tuple[nn.Module, nn.Module]], fold_of: dict[str, int] | None,
               device: torch.device, progress: bool, log: Log) -> None:
    infos = [info for infos in manifest.splits.values() for info in infos]
    done = [info for info in infos if state.finished(info.name)]
    total = sum(info.count for info in infos)
    if done:
        log(f"{len(done)} of {len(infos)} label shards written earlier, kept")
    settings = state.settings
    with tqdm(total=total, initial=sum(i.count for i in done), unit="sample", desc="label",
              disable=not progress, dynamic_ncols=True) as bar:
        for info in infos:
            if state.finished(info.name):
                continue
            samples = _label_shard(manifest, manifest.root / info.name, teachers, fold_of,
                                   settings, device, bar.update)
            path = state.folder / info.name
            buffer = io.BytesIO()
            write_tar(buffer, samples)
            storage.write_atomically(path, buffer.getvalue())
            state.done[info.name] = sha256_of(path)
            state.save()


def _label_shard(manifest: Manifest, path: Path, teachers: list[tuple[nn.Module, nn.Module]],
                 fold_of: dict[str, int] | None, settings: dict[str, Any],
                 device: torch.device, advance: Callable[[int], Any]) -> list[dict[str, Any]]:
    """The sidecar samples of one shard, in its order, batched by fold and input shape."""
    keys, groups = [], {}
    for raw in iter_tar_samples(path):
        try:
            decoded = decode_sample(raw, manifest.max_pixels)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; a sample without labels would stop the soft-"
                             "label loader (check the shards with `stexture inspect`)") from exc
        key = decoded.key
        fold = 0 if fold_of is None else fold_of.get(key)
        if fold is None:
            raise ValueError(f"sample {key!r} of {path} is not in index.csv: it has no fold")
        structure, texture = _views(decoded.image, decoded.structure, settings["input_size"])
        keys.append(key)
        groups.setdefault((fold, structure.shape), []).append((key, structure, texture))
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (fold, _), members in groups.items():
        for start in range(0, len(members), _BATCH):
            chunk = members[start:start + _BATCH]
            s, t = (label_maps(teacher, _to_input([m[i] for m in chunk], device),
                               settings["grid"], settings["temperature"]).cpu().numpy()
                    for i, teacher in ((1, teachers[fold][0]), (2, teachers[fold][1])))
            for j, member in enumerate(chunk):
                maps[member[0]] = (s[j], t[j])
            advance(len(chunk))
    return [encode_label_sample(key, *maps[key], settings["topk"]) for key in keys]
