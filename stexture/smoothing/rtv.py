"""Relative Total Variation (placeholder, being written)."""
import numpy as np

SUMMARY = "Relative Total Variation (Xu et al. 2012): removes texture, keeps structure edges"


def rtv_smooth(batch: np.ndarray, *, lam: float = 0.01, sigma: float = 3.0,
               sharpness: float = 0.02, n_iter: int = 4, tol: float = 1e-3,
               device: str = "cpu") -> np.ndarray:
    raise NotImplementedError
