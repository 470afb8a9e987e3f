"""One writer per run folder: an OS file lock held by train.py / eval.py while they use the run.

``<workdir>/.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) and holds the owner's
process id and host name. A second process asking for the same folder gets one clear line naming
the owner; the lock belongs to the open file, so a killed process frees it with no stale state to
clean up (the file itself stays, unlocked, and empty once released).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from types import TracebackType

from mmfuse_jax.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(workdir):`` holds the folder's lock for the block (or `acquire`/`release`)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise ConfigError(f"{self.workdir} is in use by process {owner.get('pid', '?')} on host "
                              f"{owner.get('host', '?')} ({owner.get('command', 'another command')}): wait for "
                              "it to finish or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": _command()}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a free folder's lock file is empty (and unchanged by a refused command)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _command() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
