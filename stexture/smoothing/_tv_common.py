r"""The ROF total-variation problem and the Chambolle iteration both kernels run.

Each channel ``f`` of each image is smoothed on its own by solving the Rudin-Osher-Fatemi
problem

.. math::

    \min_u \; \sum |\nabla u| + \frac{1}{2\,\mathrm{weight}} \sum (u - f)^2,

through its dual: ``u = f - div p`` with the fixed-point iteration

.. math::

    p \leftarrow \frac{p - \tau \nabla(f - \operatorname{div} p)}
                       {1 + \frac{\tau}{\mathrm{weight}} |\nabla(f - \operatorname{div} p)|},
    \qquad \tau = 1/4,

forward differences for the gradient and the matching backward differences for the
divergence. ``weight``, ``eps``, ``max_num_iter``, the stopping rule and the per-channel
treatment mean what they mean in ``skimage.restoration.denoise_tv_chambolle`` with
``channel_axis=-1``: the energy ``E_k = (sum (div p)^2 + weight sum |grad u|) / (H W)`` is
tracked and the iteration stops at the first ``k > 0`` with ``|E_{k-1} - E_k| < eps E_0``.

The CPU and CUDA kernels take the step size from here, so they iterate with the same
numbers.
"""

from __future__ import annotations

__all__ = ["TAU"]

#: Step of the dual iteration: 1 / (2 ndim), the largest that Chambolle proves convergent in 2-D.
TAU = 0.25
