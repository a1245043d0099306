"""Choosing where a computation runs: ``"cpu"``, ``"cuda"`` or ``"auto"``."""

from __future__ import annotations

import functools

__all__ = ["DEVICES", "CudaUnavailableError", "cuda_available", "resolve_device"]

DEVICES = ("cpu", "cuda", "auto")


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for on a machine without a usable CUDA GPU."""


@functools.lru_cache(maxsize=1)
def _cuda_probe() -> tuple[bool, str]:
    try:
        from numba import cuda
    except ImportError as exc:  # numba-cuda missing: say so rather than fail deep inside numba
        return False, f"numba.cuda cannot be imported ({exc})"
    try:
        if cuda.is_available():
            return True, ""
        return False, "numba.cuda.is_available() is False (no GPU or no CUDA driver found)"
    except Exception as exc:  # the driver itself can raise while probing
        return False, f"probing the CUDA driver failed ({exc})"


def cuda_available() -> bool:
    """True when Numba can launch CUDA kernels (a GPU, or the simulator under
    ``NUMBA_ENABLE_CUDASIM=1``)."""
    return _cuda_probe()[0]


def resolve_device(device: str) -> str:
    """Map a user's device name to ``"cpu"`` or ``"cuda"``.

    ``"auto"`` picks the GPU when one is usable. ``"cuda"`` without one raises
    :class:`CudaUnavailableError` with the reason and the way out.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    usable, reason = _cuda_probe()
    if device == "auto":
        return "cuda" if usable else "cpu"
    if not usable:
        raise CudaUnavailableError(
            f"device='cuda' was requested but no usable CUDA GPU was found: {reason}. "
            "Use device='cpu' (or device='auto' to take the GPU only when there is one)."
        )
    return "cuda"
