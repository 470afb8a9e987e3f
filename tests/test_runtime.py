"""`runtime.tune_malloc`: glibc keeps freed large blocks for reuse instead of unmapping them, so a
buffer allocated again is not first-touched page by page (counted as minor page faults)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO

# A fresh interpreter: mallocs, fills and frees 48 MB (BERT's word embedding is 47 MB) eight times from one
# long-lived worker thread (as XLA's pool threads allocate) and prints the minor page faults of the last seven
# and tune_malloc's answer.
PROBE = """
import ctypes, json, resource, threading
from mmfuse_jax import runtime
tuned = runtime.tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
faults = []
def fill():
    for i in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(48 * 2 ** 20)
        ctypes.memset(p, 1, 48 * 2 ** 20)
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=fill); t.start(); t.join()
print(json.dumps({"tuned": tuned, "faults": sum(faults[1:])}))
"""

def _probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if env_value is None:
        env.pop("MMFUSE_MALLOC", None)
    else:
        env["MMFUSE_MALLOC"] = env_value
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tuned_malloc_reuses_large_blocks_and_system_leaves_glibc_alone():
    tuned, system = _probe(None), _probe("system")
    assert tuned["tuned"] is True and system["tuned"] is False
    pages = 7 * 48 * 2 ** 20 // 4096  # what seven fresh 48 MB blocks first-touch
    assert system["faults"] > pages // 2, system  # glibc's default: mapped afresh every time
    assert tuned["faults"] < pages // 20, tuned  # tuned: the freed block is reused


def test_tune_malloc_is_idempotent():
    from mmfuse_jax import runtime

    assert runtime.tune_malloc() == runtime.tune_malloc()
