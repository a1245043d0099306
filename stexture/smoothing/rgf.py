"""Rolling guidance filter (placeholder, being written)."""
import numpy as np

SUMMARY = "Rolling guidance filter (Zhang et al. 2014): Gaussian, then joint bilateral passes"


def rgf_smooth(batch: np.ndarray, *, sigma_s: float = 3.0, sigma_r: float = 0.1,
               n_iter: int = 4, device: str = "cpu") -> np.ndarray:
    raise NotImplementedError
