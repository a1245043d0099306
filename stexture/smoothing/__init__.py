"""Edge-preserving smoothing methods and their registry.

Every method has the same shape. Its public module (``rtv``, ``rgf``, ``tv``) checks the
parameters and the batch and dispatches; its smoothing function takes a float32 batch
``(N, H, W, C)``, C in {1, 3}, values in [0, 1], and keyword parameters, and returns the
structure layer of the same shape (anything else is a ``ValueError``). Beside it:
``_<method>_common.py`` (the formulation both kernels use), ``_<method>_cpu.py`` (Numba
``njit(parallel=True)``), ``_<method>_cuda.py`` (Numba CUDA) and ``_<method>_reference.py``
(slow, obviously right). The kernels import only their ``_common`` module (and
``_cuda.py``, the launch geometry of every CUDA kernel), never each other. ``_threading.py``
picks the Numba threading layer before the first kernel runs.

``METHODS`` maps a method's name to a :class:`Method` that knows its defaults (read from the
function's signature, so there is one source of truth) and checks parameter names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from . import rgf, rtv, tv
from ._threading import prefer_tbb

__all__ = ["METHODS", "Method", "get_method"]

# Numba fixes its threading layer at the first parallel launch, which no import makes: this
# runs before any kernel does
prefer_tbb()

_NOT_PARAMETERS = ("batch", "device")


@dataclass(frozen=True)
class Method:
    """A smoothing method: its name, a one-line summary and its batch function."""

    name: str
    summary: str
    function: Callable[..., np.ndarray]

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter names and default values, from the function's signature."""
        signature = inspect.signature(self.function)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name not in _NOT_PARAMETERS
        }

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults updated with ``params``; an unknown name is a ``ValueError``."""
        defaults = self.defaults
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {self.name!r}; "
                f"it takes {', '.join(defaults)}"
            )
        return {**defaults, **params}

    def __call__(self, batch: np.ndarray, device: str = "cpu", **params: Any) -> np.ndarray:
        return self.function(batch, device=device, **self.resolve_params(params))


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "rtv": Method("rtv", rtv.SUMMARY, rtv.rtv_smooth),
        "rgf": Method("rgf", rgf.SUMMARY, rgf.rgf_smooth),
        "tv": Method("tv", tv.SUMMARY, tv.tv_smooth),
    }
)


def get_method(name: str) -> Method:
    """The registered method called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}; known methods: {', '.join(METHODS)}"
        ) from None
