import os
import sys
from pathlib import Path

import pytest

# as in stexture.cli: sleeping, not spinning, OpenMP threads (set before torch is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# tests import their shared helpers (shardfactory) as plain modules
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tiny models: on a shared machine two OpenMP
    threads per process slowed them by an order of magnitude when the cores were busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the tests of one module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
