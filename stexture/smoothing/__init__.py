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
    """A smoothing method: its name, a one-line summary and its batch function.

    Parameters
    ----------
    name : str
        The name :data:`METHODS` and :func:`stexture.decompose` know it by.
    summary : str
        One line saying what the method does.
    function : callable
        ``function(batch, *, device, **params) -> structure``: a float32 ``(N, H, W, C)``
        batch to its structure layer of the same shape; every parameter a keyword with a
        default.
    """

    name: str
    summary: str
    function: Callable[..., np.ndarray]

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter names and default values, read from the function's signature.

        Returns
        -------
        dict
            ``{name: default}`` for every parameter but ``batch`` and ``device``.
        """
        signature = inspect.signature(self.function)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name not in _NOT_PARAMETERS
        }

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return the defaults updated with ``params``.

        Parameters
        ----------
        params : mapping
            Parameter values by name; may be empty.

        Returns
        -------
        dict
            Every parameter of the method, ``params`` over the defaults.

        Raises
        ------
        ValueError
            When a name in ``params`` is not a parameter of the method (the message lists
            the ones it takes).
        """
        defaults = self.defaults
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {self.name!r}; "
                f"it takes {', '.join(defaults)}"
            )
        return {**defaults, **params}

    def __call__(self, batch: np.ndarray, device: str = "cpu", **params: Any) -> np.ndarray:
        """Smooth ``batch`` with the defaults updated with ``params``.

        Parameters
        ----------
        batch : ndarray
            float32 ``(N, H, W, C)``, C in {1, 3}, values in [0, 1].
        device : {"cpu", "cuda", "auto"}
            Where to run.
        **params
            The method's parameters (see :attr:`defaults`).

        Returns
        -------
        ndarray
            The float32 structure layer, of ``batch``'s shape.

        Raises
        ------
        ValueError
            For an unknown or out-of-range parameter, a batch of another shape or dtype,
            or an unknown device.
        """
        return self.function(batch, device=device, **self.resolve_params(params))


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        "rtv": Method("rtv", rtv.SUMMARY, rtv.rtv_smooth),
        "rgf": Method("rgf", rgf.SUMMARY, rgf.rgf_smooth),
        "tv": Method("tv", tv.SUMMARY, tv.tv_smooth),
    }
)


def get_method(name: str) -> Method:
    """Return the registered method called ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS` (``"rtv"``, ``"rgf"``, ``"tv"``).

    Returns
    -------
    Method
        The method.

    Raises
    ------
    ValueError
        For any other name; the message lists the known ones.
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}; known methods: {', '.join(METHODS)}"
        ) from None
