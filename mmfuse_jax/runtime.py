"""Process-wide host settings for the command-line entry points (train.py, eval.py, sweeps,
experiments, predict, the demo, the benchmarks' JAX side): `tune_host` = `tune_malloc` + `inline_cpu_execution`
+ `unrolled_threefry` + `tune_gc`; and, for the user-facing commands only, `compilation_cache`.

XLA on CPU allocates each execution's temporary buffers and every new output with malloc and frees
them when the step ends. With glibc's defaults a block over 32 MB (BERT's 30522 x 384 word embedding
is 47 MB, and so are its gradient and AdamW moments) is mapped fresh from the kernel on every
allocation and unmapped on free, so each train step first-touches those buffers page by page.
`tune_malloc` keeps glibc off mmap and stops it trimming (``mallopt``: no mmap, no trimming, 1 GB
top pad; what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...`` do for the
PyTorch side of our benchmarks), so freed blocks are reused. Measured (benchmarks/README.md, "Where
a text step goes"): the forward and backward pass of a 22.7 M-parameter BERT step 112 -> 85 ms
(28,000 -> ~70 page faults); the whole step only 206 -> 194 ms, because blocks over 64 MB allocated
by XLA's worker threads still come from mmap: a thread's glibc arena grows in heaps of at most 64 MB,
so a larger request is always mapped afresh and unmapped on free, whatever mallopt says (seen with
strace: the text step's one 236 MB temporary buffer, mapped by a pool thread on every step, 57,700
page faults and ~110 ms of system time per step). One arena for all threads (``M_ARENA_MAX=1``) would
keep those too, but made KuDA's step 35 % slower (allocator lock contention), so it is not set.
Instead `inline_cpu_execution` has JAX run CPU programs on the calling thread
(``jax_cpu_enable_async_dispatch=False``; the same compiled programs, same numbers), whose
allocations come from glibc's main arena, which `tune_malloc` keeps: 0 page faults per step (on a busy
machine an occasional step still maps its temporary afresh: 1 call in 9 in 2 of 6 probes with two other
processes spinning; with asynchronous dispatch, every call).
The price is the overlap of Python's work with a running step (a dispatched step no longer returns
before it finishes); for the input pipeline `training.prefetch.to_device` gets that back with its
background thread. JAX applies the flag only to single-device programs; a step sharded over several
CPU devices keeps JAX's asynchronous path. The process keeps its peak heap until it exits.

Called before JAX starts its threads (inline execution: before its CPU backend is created). Not
glibc (macOS, musl) or ``MMFUSE_MALLOC=system``: nothing changes; ``MMFUSE_CPU_DISPATCH=async`` keeps
JAX's asynchronous CPU dispatch with the tuned allocator. A library user who wants the same in a
notebook calls ``mmfuse_jax.runtime.tune_host()`` first thing.

`unrolled_threefry`: jax.random's Threefry-2x32 hash (every flax ``nn.Dropout`` mask, every
``jax.random`` draw) is lowered on CPU as a ``fori_loop`` over its five groups of rounds, which JAX
chooses there to compile faster; every random draw is then a loop of several kernels over its whole
array. On GPU and TPU JAX lowers the same hash unrolled; registering that lowering for CPU too makes a
draw one fused pass. The hash is integer arithmetic, so the bits are the same (tests/test_runtime.py
draws bits, masks, normals and keys both ways and compares them bit for bit; a text_only step of a
22.7 M parameter BERT: the same losses, 109 -> 104 ms on a 2-core Intel Xeon; compiling it 5.0 -> 6.1 s).
What it costs is compile time: KuDA's `bench` train step 52-54 -> 66-69 s to compile for 2.90 -> 2.82 s and
2.78 -> 2.62 s a step (two sittings), paid back after some 100-200 steps (KuDA's SIMS epoch is 43); the text
step's 1.1 s per length bucket after about 250 steps. ``MMFUSE_THREEFRY=rolled`` keeps JAX's CPU lowering:
for short runs, and the test suite, which compiles far more than it runs.

`tune_gc`: tracing and lowering a train step allocate hundreds of thousands of small Python objects
(tracers, equations, MLIR handles), so CPython's cyclic collector, which runs after every 700 net container
allocations by default, ran a thousand times while one step was traced and lowered and took a fifth of
that time (KuDA's `bench` step: 1.2 of 6.4 s). Generation 0 collects after 50,000 allocations instead
(generations 1 and 2 keep their default ratios, so full collections still come, 70 times less often):
trace + lower 6.35 / 6.60 -> 5.32 / 5.37 s (KuDA `bench`), 3.78 / 3.93 -> 3.19 / 3.10 s (HCT-DMG's `tiny`
step under the suite's flags; two fresh processes each, 2-core Intel Xeon). Nothing numeric changes; what
only a reference cycle keeps alive (arrays are freed by reference counting unless they sit in one) is freed
that much later. ``MMFUSE_GC=default`` keeps CPython's thresholds.

`compilation_cache`: JAX's persistent compilation cache, on by default for train.py, eval.py, predict.py,
the seed sweeps, the experiments and the demo (not for the benchmarks, which measure compiling): a process
reads back the executables an earlier one compiled for the same program, XLA flags, JAX version and
device, instead of compiling them again. eval.py after train.py reads the eval step training compiled, and
a resumed run (after a crash, a preemption or Ctrl-C) its train step: KuDA's `bench` train step takes about
a minute to compile on a 2-core CPU (above). The same executables, so the same numbers. Where: JAX's own
settings first (``JAX_COMPILATION_CACHE_DIR``; ``JAX_ENABLE_COMPILATION_CACHE=false`` turns it off), then
``MMFUSE_XLA_CACHE`` (a folder, or ``off``), then the command's default: the experiments' run store
(``STORE/.xla_cache``), otherwise ``$XDG_CACHE_HOME/mmfuse_jax/xla`` (``~/.cache/mmfuse_jax/xla``). It is
turned on after the command's arguments are read (``--help`` creates no folder). JAX writes only programs
that took at least a second to compile, and the folder is kept under `CACHE_MAX_BYTES` by evicting the least
recently used (``JAX_COMPILATION_CACHE_MAX_SIZE`` sets another cap; with ``JAX_COMPILATION_CACHE_DIR`` JAX's
own rules apply). Entries without the access-time file the cap needs get one first (`_give_entries_access_times`).
A folder that cannot be written leaves the cache off with one note; a run never fails for its cache. An
executable that does not fit the machine reading it (an XLA:CPU one compiled for CPU features the reader
lacks, e.g. in a home folder a cluster's nodes share) is refused by XLA on load and JAX compiles afresh.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform

# glibc's mallopt parameters (malloc.h). The trim threshold -1 is glibc's size_t maximum (never trim):
# the largest positive int, 2**31 - 1, still trimmed a free heap top over 2 GB, which KuDA's ~1.4 GB
# step temporary plus the 1 GB top pad is; every step then first-touched it again (334,000 page faults,
# 0.72 s of system time per ~3 s step: 3.26 -> 2.96 s and 3.52 -> 3.10 s side by side; benchmarks/README.md).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1), (M_TOP_PAD, 2 ** 30))
# gc.set_threshold: generation 0 after 50,000 net allocations (CPython's default: 700), 1 and 2 as default.
GC_THRESHOLD = (50_000, 10, 10)
# The persistent compilation cache's size cap (least recently used entries evicted beyond it).
CACHE_MAX_BYTES = 2 * 2 ** 30
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


def inline_cpu_execution() -> bool:
    """Sets ``jax_cpu_enable_async_dispatch=False`` (module doc) unless ``MMFUSE_CPU_DISPATCH=async``;
    True when set. Has no effect on a CPU backend that already exists."""
    if os.environ.get("MMFUSE_CPU_DISPATCH", "inline") == "async":
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True


def unrolled_threefry() -> bool:
    """Registers JAX's unrolled Threefry-2x32 lowering (its GPU and TPU one) for CPU (module doc) unless
    ``MMFUSE_THREEFRY=rolled``; True when in effect. Programs compiled before keep theirs. False, with
    nothing changed, where this JAX lacks the private names it needs."""
    if os.environ.get("MMFUSE_THREEFRY", "unrolled") == "rolled":
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
        primitive, rule = threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule
    except (ImportError, AttributeError):
        return False
    mlir.register_lowering(primitive, rule, platform="cpu")
    return True


def tune_gc() -> bool:
    """Sets `GC_THRESHOLD` (module doc) unless ``MMFUSE_GC=default``; True when set."""
    if os.environ.get("MMFUSE_GC", "tuned") == "default":
        return False
    gc.set_threshold(*GC_THRESHOLD)
    return True


def tune_host() -> dict[str, bool]:
    """`tune_malloc`, then `inline_cpu_execution` where the allocator is tuned (it is what keeps the
    calling thread's large blocks), `unrolled_threefry` and `tune_gc` (applied first: the imports after it,
    JAX's included, run fewer collections too, ~6 % faster). Returns what is in effect, for the records of
    the benchmarks."""
    gc_tuned = tune_gc()
    malloc = tune_malloc()
    return {"malloc_tuned": malloc, "cpu_inline": inline_cpu_execution() if malloc else False,
            "threefry_unrolled": unrolled_threefry(), "gc_tuned": gc_tuned}


def compilation_cache(default: str | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache for this process (module doc) and returns its folder;
    None where it stays off. Call before the first compile."""
    import sys

    import jax

    if not jax.config.jax_enable_compilation_cache:  # JAX_ENABLE_COMPILATION_CACHE=false, parsed by JAX
        return None
    if jax.config.jax_compilation_cache_dir:  # set by JAX_COMPILATION_CACHE_DIR or by the caller
        return jax.config.jax_compilation_cache_dir
    choice = os.environ.get("MMFUSE_XLA_CACHE")
    if choice is not None and choice.strip().lower() in ("", "0", "false", "no", "off", "none"):
        return None
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.abspath(os.path.expanduser(choice or default or os.path.join(home, "mmfuse_jax", "xla")))
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        print(f"note: no compilation cache: {folder}: {e.strerror or e}; MMFUSE_XLA_CACHE=<folder> puts it "
              "elsewhere (or =off)", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        try:
            import filelock  # noqa: F401  (JAX's eviction needs it; without it the folder is not capped)
        except ImportError:
            return folder
        _give_entries_access_times(folder)
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return folder


def _give_entries_access_times(folder: str) -> None:
    """Writes the access-time file JAX's size cap keeps beside each entry (``<key>-atime``: nanoseconds, 8
    bytes little-endian) for the entries that lack one, with the entry's modification time. Entries written
    without a cap (an older experiments store, another process's uncapped JAX) or by a process killed between
    JAX's two writes have none, and JAX 0.10's eviction then fails on every later write, so nothing new is
    cached (jax-ml/jax#39880)."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return
    for name in names:
        key = name.removesuffix("-cache")
        if key != name and key + "-atime" not in names:
            try:
                stamp = os.stat(os.path.join(folder, name)).st_mtime_ns
                with open(os.path.join(folder, key + "-atime"), "wb") as f:
                    f.write(stamp.to_bytes(8, "little"))
            except OSError:
                pass
