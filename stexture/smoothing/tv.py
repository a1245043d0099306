"""Total-variation smoothing (placeholder, being written)."""
import numpy as np

SUMMARY = "ROF total variation by Chambolle's projection (weight as in scikit-image)"


def tv_smooth(batch: np.ndarray, *, weight: float = 0.1, eps: float = 2e-4,
              max_num_iter: int = 200, device: str = "cpu") -> np.ndarray:
    raise NotImplementedError
