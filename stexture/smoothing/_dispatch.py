"""The tail every method's public module ends with: check the batch, pick the kernel, run it.

Both kernels are named by ``"module:function"`` and imported on the first call that needs
them: Numba (about a second to import) is not loaded by ``import stexture`` (so ``stexture
--help`` stays quick), and ``numba.cuda`` (absent from CPU-only installs) only when a GPU is
asked for.
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
    cpu_kernel: str,
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
    cpu_kernel : str
        ``"module:function"``, the CPU kernel in a sibling module of this package (for
        example ``"_rgf_cpu:rolling_guidance"``), called as
        ``kernel(batch, *args, **kwargs)``.
    cuda_kernel : str
        The CUDA kernel, named and called the same way.
    *args, **kwargs
        The method's parameters, already checked by the caller.

    Returns
    -------
    ndarray
        What the kernel returns: the float32 structure layer of ``batch``'s shape.
    """
    batch = check_batch(batch)
    where = cuda_kernel if resolve_device(device) == "cuda" else cpu_kernel
    module, name = where.split(":")
    kernel: Callable[..., np.ndarray] = getattr(
        importlib.import_module(f".{module}", __package__), name
    )
    return kernel(batch, *args, **kwargs)
