"""Processes and the folders they write: worker processes that end with the process that
started them (the decompose engines' workers and the loaders' DataLoader workers alike), and
the lock a writing command holds on its output folder (:func:`hold_output`)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "OutputInUse", "die_with_parent", "hold_output"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_SECONDS = 0.5


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent is gone (we were re-parented): nothing to clean here
        time.sleep(_WATCH_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """End this (worker) process when ``parent_pid``, the process that started it, ends.

    On Linux the kernel sends SIGKILL the moment the parent dies (``prctl`` with
    ``PR_SET_PDEATHSIG``, which works even while this process computes without the GIL);
    everywhere, a daemon thread also checks every half second that the parent is still the
    one, and exits if not. A parent already gone when this is called ends it at once.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="stexture-parent-watch").start()


# ---------------------------------------------------------------- the output folder's lock

#: The file a writing command holds in its output folder while it runs.
LOCK_NAME = ".stexture-lock"
_LOCK_FIELDS = ("pid", "host", "started", "command")


class OutputInUse(ValueError):
    """Another stexture run holds the output folder; the message names it."""


def _holder_text(holder: dict[str, Any]) -> str:
    return (f"`{holder.get('command', 'stexture')}` (pid {holder.get('pid')} on "
            f"{holder.get('host')}, started {holder.get('started')})")


def _parse_holder(payload: bytes, where: str) -> dict[str, Any] | None:
    """The holder a lock file names; ``None`` for an empty one (a run killed between
    creating and filling it); ``ValueError`` for a file that is not a stexture lock."""
    if not payload.strip():
        return None
    try:
        holder = json.loads(payload.decode("utf-8"))
        if not isinstance(holder, dict) or set(_LOCK_FIELDS) - set(holder):
            raise ValueError("fields missing")
        return holder
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{where} is not a stexture lock file: stexture did not write it; "
                         "move it away or choose another output folder") from None


def _this_holder(command: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def _pid_alive(pid: object) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _in_use(out: object, holder: dict[str, Any] | None) -> OutputInUse:
    who = _holder_text(holder) if holder else "another stexture run"
    return OutputInUse(f"{out} is in use by {who}: two runs writing one folder would "
                       "destroy each other's files; wait for it to end, or choose another "
                       "output folder")


def _open_lock_file(path: Path) -> int:
    """Open (create) the lock file without following a link; refuse anything but a
    regular file there."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link, not a lock stexture made: move it "
                             "away") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file, not a lock stexture made: move it "
                         "away")
    return fd


def _lock_local(folder: Path, command: str, log: Any) -> int:
    """Take the lock file in ``folder`` (``flock``: the kernel releases it when the holder
    dies, however it dies); its content names the holder for the message of the next."""
    import fcntl

    path = folder / LOCK_NAME
    while True:
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            payload = os.pread(fd, 4096, 0)
            os.close(fd)
            raise _in_use(folder, _parse_holder(payload, str(path))) from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it between our open and flock: open the new one
    try:
        previous = _parse_holder(os.pread(fd, 4096, 0), str(path))
    except ValueError:
        os.close(fd)
        raise
    if previous is not None:
        log(f"taking over the lock of {_holder_text(previous)}, which no longer runs")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_this_holder(command)).encode("utf-8"), 0)
    os.fsync(fd)
    return fd


def _lock_url(folder: str, command: str, log: Any) -> dict[str, Any]:
    """An object store has no ``flock``: the lock object names its holder, and one whose
    holder is a process of this host that no longer runs is taken over. Advisory: two runs
    started within one round trip of each other are not told apart."""
    from .shards import storage

    path = storage.join(folder, LOCK_NAME)
    if storage.is_file(path):
        holder = _parse_holder(storage.read_bytes(path, 4096), str(path))
        if holder is not None:
            if holder["host"] != socket.gethostname() or _pid_alive(holder["pid"]):
                raise _in_use(folder, holder)
            log(f"taking over the lock of {_holder_text(holder)}, which no longer runs")
    mine = _this_holder(command)
    storage.write_atomically(path, json.dumps(mine).encode("utf-8"))
    return mine


@contextmanager
def hold_output(out: Path | str, command: str,
                log: Any = lambda line: None) -> Iterator[None]:
    """Hold ``out`` (a local folder or an fsspec URL, made when absent) for one writing
    command, and let it go when the block ends.

    A second run on the same folder fails at once with :class:`OutputInUse` naming the
    holder (its command, PID, host and start time); a lock left by a run that died is taken
    over (``log`` says so). The lock file is ``OUT/.stexture-lock``, removed at the end.
    """
    from .shards import storage

    out = storage.location(out)
    storage.make_dirs(out)
    if isinstance(out, Path):
        fd = _lock_local(out, command, log)
        try:
            yield
        finally:
            path = out / LOCK_NAME
            try:
                if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    path.unlink()
            except FileNotFoundError:
                pass
            os.close(fd)
        return
    mine = _lock_url(out, command, log)
    try:
        yield
    finally:
        path = storage.join(out, LOCK_NAME)
        try:
            if _parse_holder(storage.read_bytes(path, 4096), str(path)) == mine:
                storage.remove(path)
        except (OSError, ValueError):
            pass  # not ours any more, or gone: nothing of ours to remove
