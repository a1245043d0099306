"""stexture: structure/texture decomposition and cue-conflict training data.

The public API is re-exported here; see ``__all__``.
"""

from ._device import CudaUnavailableError, cuda_available, resolve_device
from .decompose import decompose
from .smoothing import METHODS, Method, get_method

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CudaUnavailableError",
    "Method",
    "__version__",
    "cuda_available",
    "decompose",
    "get_method",
    "resolve_device",
]
