"""Five common corruptions for robustness accuracy: noise, blur, JPEG, contrast, pixelate.

The kinds and the five severities follow Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR 2019), which give one parameter
table for ImageNet-sized images and a milder one for 32 px CIFAR images (``profile``):

============  =====================================  =====================================
kind          ``"imagenet"`` (severity 1..5)          ``"cifar"`` (severity 1..5)
============  =====================================  =====================================
noise         Gaussian, sd .08 .12 .18 .26 .38        sd .04 .06 .08 .09 .10
blur          Gaussian, sigma 1 2 3 4 6 px            sigma .4 .6 .7 .8 1 px
jpeg          quality 25 18 15 10 7                   quality 80 65 58 50 40
contrast      ``(x - mean) c + mean``, c .4 .3 .2 .1 .05   c .75 .5 .4 .3 .15
pixelate      box down to f, nearest up; f .6 .5 .4 .3 .25   f .95 .9 .85 .75 .65
============  =====================================  =====================================

(values in [0, 1]; ``mean`` the image's mean per channel). :func:`corrupt` changes one
uint8 image; :class:`CorruptedBatches` wraps an evaluation loader of normalised batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ..loader.batch import IMAGENET_MEAN, IMAGENET_STD, Normalize

__all__ = ["CORRUPTIONS", "CorruptedBatches", "corrupt"]

CORRUPTIONS = ("noise", "blur", "jpeg", "contrast", "pixelate")
_TABLES = {
    "imagenet": {"noise": (0.08, 0.12, 0.18, 0.26, 0.38), "blur": (1, 2, 3, 4, 6),
                 "jpeg": (25, 18, 15, 10, 7), "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
                 "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25)},
    "cifar": {"noise": (0.04, 0.06, 0.08, 0.09, 0.10), "blur": (0.4, 0.6, 0.7, 0.8, 1.0),
              "jpeg": (80, 65, 58, 50, 40), "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
              "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65)},
}


def _parameter(kind: str, severity: int, profile: str) -> float:
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {', '.join(CORRUPTIONS)}")
    if profile not in _TABLES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(_TABLES)}")
    if int(severity) != severity or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return _TABLES[profile][kind][int(severity) - 1]


def corrupt(image: np.ndarray, kind: str, severity: int = 3, *, profile: str = "imagenet",
            rng: np.random.Generator | None = None) -> np.ndarray:
    """``image`` (uint8 ``H x W x 3``) under corruption ``kind`` at ``severity`` (1..5);
    ``rng`` draws the noise (default: a generator seeded with 0)."""
    p = _parameter(kind, severity, profile)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if kind == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(p)])
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if kind == "pixelate":
        small = cv2.resize(image, (max(1, round(w * p)), max(1, round(h * p))),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    x = image.astype(np.float32) / 255.0
    if kind == "noise":
        rng = rng or np.random.default_rng(0)
        x = x + rng.normal(0.0, p, x.shape).astype(np.float32)
    elif kind == "blur":
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=p, borderType=cv2.BORDER_REFLECT)
    else:  # contrast
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * p + mean
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


class CorruptedBatches:
    """Batches ``(x, y, ...)`` of ``loader`` (``x`` normalised with ``mean``/``std``) with
    every image corrupted: undo the normalisation, round to uint8, :func:`corrupt`,
    normalise again. The noise of image ``i`` of the pass is drawn from ``(seed, i)``, so
    every model sees the same corrupted images."""

    def __init__(self, loader: Iterable, kind: str, severity: int = 3, *,
                 profile: str = "imagenet", seed: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        _parameter(kind, severity, profile)
        self.loader, self.kind, self.severity = loader, kind, severity
        self.profile, self.seed = profile, seed
        self.normalize = Normalize(mean, std)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        index = 0
        for batch in self.loader:
            unit = self.normalize.undo(batch[0]).clamp(0, 1)
            images = (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            out = np.stack([corrupt(np.ascontiguousarray(img), self.kind, self.severity,
                                    profile=self.profile,
                                    rng=np.random.default_rng([self.seed, index + i]))
                            for i, img in enumerate(images)])
            index += len(images)
            x = self.normalize.unit(torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255)
            yield (x, *batch[1:])
