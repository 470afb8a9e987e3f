"""One writer per run folder: a second process is refused with the owner's pid; a dead owner frees it."""
import os
import signal
import subprocess
import sys

import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training.lock import RunLock

HOLD = """
import sys, time
from mmfuse_jax.training.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(workdir):
    p = subprocess.Popen([sys.executable, "-c", HOLD, workdir], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_process_is_refused_and_dead_owner_frees(tmp_path):
    p = _holder(str(tmp_path))
    try:
        with pytest.raises(ConfigError) as e:
            RunLock(str(tmp_path)).acquire()
        assert f"in use by process {p.pid} on host" in str(e.value)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with RunLock(str(tmp_path)) as lock:  # the killed owner's lock is gone
        assert lock.path == os.path.join(str(tmp_path), ".lock")


def test_release_lets_the_next_one_in(tmp_path):
    with RunLock(str(tmp_path)):
        pass
    with RunLock(str(tmp_path)) as lock:
        assert f'"pid": {os.getpid()}' in open(lock.path).read()
