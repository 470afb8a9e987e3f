"""Process-wide allocator settings for the command-line entry points (train.py, eval.py, sweeps,
experiments, the benchmarks' JAX side).

XLA on CPU allocates each execution's temporary buffers and every new output with malloc and frees
them when the step ends. With glibc's defaults a block over 32 MB (BERT's 30522 x 384 word embedding
is 47 MB, and so are its gradient and AdamW moments) is mapped fresh from the kernel on every
allocation and unmapped on free, so each train step first-touches those buffers page by page.
`tune_malloc` keeps glibc off mmap and stops it trimming (``mallopt``: no mmap, no trimming, 1 GB
top pad; what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...`` do for the
PyTorch side of our benchmarks), so freed blocks are reused. Measured (benchmarks/README.md, "Where
a text step goes"): the forward and backward pass of a 22.7 M-parameter BERT step 112 -> 85 ms
(28,000 -> ~70 page faults); the whole step only 206 -> 194 ms, because blocks over 64 MB allocated
by XLA's worker threads still come from mmap (a thread arena's limit). One arena for all threads
(``M_ARENA_MAX=1``) would keep those too, but made KuDA's step 35 % slower (allocator lock
contention), so it is not set. The process
keeps its peak heap until it exits.

Called before JAX starts its threads. Not glibc (macOS, musl) or ``MMFUSE_MALLOC=system``: nothing
changes. A library user who wants the same in a notebook calls ``mmfuse_jax.runtime.tune_malloc()``
first thing.
"""
from __future__ import annotations

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1), (M_TOP_PAD, 2 ** 30))
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
