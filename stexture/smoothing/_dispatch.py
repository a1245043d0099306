"""The tail every method's public module ends with: check the batch, pick the kernel, run it.

The CUDA kernel is named by ``"module:function"`` and imported only when a GPU is asked for,
so that ``numba.cuda`` (slow to import, and absent from CPU-only installs) is never loaded by
a CPU call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .._device import resolve_device
from ._checks import check_batch

__all__ = ["run_kernel"]


def run_kernel(
    batch: object,
    device: str,
    cpu_kernel: Callable[..., np.ndarray],
    cuda_kernel: str,
    *args: Any,
    **kwargs: Any,
) -> np.ndarray:
    """Check ``batch`` and run it through the kernel for ``device``.

    Parameters
    ----------
    batch : object
        Should be a float32 ``(N, H, W, C)`` array, C in {1, 3}; anything else is a
        ``ValueError`` (see :func:`._checks.check_batch`).
    device : {"cpu", "cuda", "auto"}
        Where to run (see :func:`stexture._device.resolve_device`).
    cpu_kernel : callable
        The CPU kernel, called as ``cpu_kernel(batch, *args, **kwargs)``.
    cuda_kernel : str
        ``"module:function"``, the CUDA kernel in a sibling module of this package (for
        example ``"_rgf_cuda:rolling_guidance_cuda"``), called like ``cpu_kernel``.
    *args, **kwargs
        The method's parameters, already checked by the caller.

    Returns
    -------
    ndarray
        What the kernel returns: the float32 structure layer of ``batch``'s shape.
    """
    batch = check_batch(batch)
    kernel = cpu_kernel
    if resolve_device(device) == "cuda":
        module, name = cuda_kernel.split(":")
        kernel = getattr(importlib.import_module(f".{module}", __package__), name)
    return kernel(batch, *args, **kwargs)
