"""Process-wide allocator settings for the command-line entry points (train.py, eval.py, sweeps,
experiments, the benchmarks' JAX side).

XLA on CPU allocates each execution's temporary buffers and every new output with malloc and frees
them when the step ends. With glibc's defaults a block over 32 MB (BERT's 30522 x 384 word embedding
is 47 MB, and so are its gradient and AdamW moments) is mapped fresh from the kernel on every
allocation and unmapped on free, and a thread's arena cannot hold a block over 64 MB at all, so each
train step first-touches its large buffers page by page: measured on the `text_vs_transformers`
setup (benchmarks/README.md, "Where a text step goes"), ~58,000 minor page faults and ~110 ms of
system time in a 200 ms step. `tune_malloc` makes glibc keep freed memory and serve every block
from one heap (``mallopt``: one arena, no mmap, no trimming, 1 GB top pad; what the environment
variables ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...``
would do), so the buffers of the previous step are reused. The process keeps its peak heap until
it exits.

Called before JAX starts its threads. Not glibc (macOS, musl) or ``MMFUSE_MALLOC=system``: nothing
changes. A library user who wants the same in a notebook calls ``mmfuse_jax.runtime.tune_malloc()``
first thing.
"""
from __future__ import annotations

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1), (M_TOP_PAD, 2 ** 30))
_done: bool | None = None


def tune_malloc() -> bool:
    """Applies `SETTINGS` with glibc's ``mallopt`` once per process; True when they are in effect."""
    global _done
    if _done is None:
        _done = False
        if os.environ.get("MMFUSE_MALLOC", "tuned") != "system" and platform.libc_ver()[0] == "glibc":
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _done = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    return _done
