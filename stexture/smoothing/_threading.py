"""The Numba threading layer the CPU kernels run on: TBB, found without an environment variable.

Chosen by ``benchmarks/bench_decompose.py`` (figures in ``benchmarks/README.md`` and the
README's threading-layer table): Numba's default OpenMP layer spin-waits at every parallel
region's barrier, so rtv's many short regions (two per CG iteration) slowed down several
times when another process was busy. ``OMP_WAIT_POLICY=PASSIVE`` fixed most of that, but it
can only be set through the environment before the OpenMP runtime starts, and PyTorch
shares that runtime (both load ``libgomp.so.1``), so setting it would change a user's torch
code. Numba's ``workqueue`` layer sleeps instead of spinning but was slower alone and
aborts the process when two Python threads launch kernels at once. TBB was as fast as
OpenMP alone, about as fast as ``PASSIVE`` when busy, is safe with threads and with fork,
and runs its own pool, leaving OpenMP (and torch) untouched.

Numba already prefers TBB when it can load ``libtbb``; the ``tbb`` wheel puts that library in
the environment's ``lib`` folder, which the dynamic loader does not search, so Numba would
fall back to OpenMP. :func:`prefer_tbb` loads it by its full path first; Numba's own lookup
by name then finds the loaded copy.
"""

from __future__ import annotations

import ctypes
import os
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["prefer_tbb"]

_LIBTBB = {"win32": "tbb12.dll", "darwin": "libtbb.12.dylib"}.get(sys.platform, "libtbb.so.12")


def _libtbb_path() -> Path | None:
    """Where the ``tbb`` distribution installed ``libtbb``, or ``None``."""
    try:
        files = metadata.distribution("tbb").files or ()
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == _LIBTBB:
            return Path(file.locate())
    return None


def prefer_tbb() -> bool:
    """Make TBB loadable for Numba's threading layer; return whether it is.

    Does nothing when the user chose a layer (``NUMBA_THREADING_LAYER``) or when Numba's
    thread pool is already running (its layer is then fixed for the process).
    """
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return False
    # looked up rather than imported: before numba's parallel module is imported its pool
    # cannot be running, and importing numba here would slow every ``import stexture``
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and parallel._is_initialized:
        return parallel._threading_layer == "tbb"
    path = _libtbb_path()
    if path is None or not path.exists():
        return False
    try:
        # global, so that the kernel pool's own dependency on libtbb resolves to this copy
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return False
    return True
