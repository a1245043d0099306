"""Small crops of scikit-image's photos and the measures the smoothing tests share."""

import numpy as np
from skimage import data


def astronaut_crop(h: int = 48, w: int = 64) -> np.ndarray:
    """An RGB float32 crop with skin, fabric and an edge-rich background."""
    return (data.astronaut()[100 : 100 + h, 180 : 180 + w] / 255).astype(np.float32)


def camera_crop(h: int = 40, w: int = 56) -> np.ndarray:
    """A gray float32 crop of the cameraman photo."""
    return (data.camera()[120 : 120 + h, 200 : 200 + w] / 255).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of ``a`` against ``b``, both with values in [0, 1] (computed in float64)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10.0 * np.log10(1.0 / mse))


def gradient_energy(layer: np.ndarray) -> float:
    """Mean squared forward difference along the two axes after the first (H, W of a batch
    or of an HxWxC image's rows and columns)."""
    return float(np.mean(np.diff(layer, axis=1) ** 2) + np.mean(np.diff(layer, axis=2) ** 2))
