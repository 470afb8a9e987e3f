"""`runtime.tune_malloc`: glibc keeps freed large blocks for reuse instead of unmapping them, so a
buffer allocated again is not first-touched page by page (counted as minor page faults);
`runtime.tune_host` adds inline CPU execution, which keeps XLA's over-64 MB temporaries off fresh
mappings too. `runtime.compilation_cache`: where the CLIs' persistent compilation cache goes, or that it stays
off (train.py and eval.py sharing it: tests/training/test_stages.py)."""
from __future__ import annotations

import json
import os
import platform
import statistics
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

# A fresh interpreter: a jitted program whose 96 MB temporary (over a glibc thread arena's 64 MB heap)
# XLA allocates on every call; the minor page faults of each of nine calls after two warm-ups.
XLA_PROBE = """
import gc, json, resource
from mmfuse_jax import runtime
host = runtime.tune_host()
host["gc_threshold"] = list(gc.get_threshold())
import jax, jax.numpy as jnp
n = 24 * 2 ** 20
@jax.jit
def f(x):
    y = jnp.sin(x)
    return jnp.cumsum(y)[-1] + jnp.max(y * y[::-1])
x = jnp.ones((n,), jnp.float32)
jax.block_until_ready(f(x)); jax.block_until_ready(f(x))
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(f(x))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({**host, "faults": faults}))
"""


def _probe(env_value: str | None, code: str = PROBE, **extra: str) -> dict:
    # XLA's default compile, not the suite's compile-speed flags (conftest): XLA_PROBE's 96 MB program runs
    # 11 times, 8.9 s -> 4.0 s a probe without them (measured on 2 cores).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("MMFUSE_CPU_DISPATCH", "XLA_FLAGS")}
    if env_value is None:
        env.pop("MMFUSE_MALLOC", None)
    else:
        env["MMFUSE_MALLOC"] = env_value
    env.update(extra)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tuned_malloc_reuses_large_blocks_and_system_leaves_glibc_alone():
    tuned, system = _probe(None), _probe("system")
    assert tuned["tuned"] is True and system["tuned"] is False
    pages = 7 * 48 * 2 ** 20 // 4096  # what seven fresh 48 MB blocks first-touch
    assert system["faults"] > pages // 2, system  # glibc's default: mapped afresh every time
    assert tuned["faults"] < pages // 20, tuned  # tuned: the freed block is reused


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_inline_cpu_execution_keeps_xlas_large_temporaries_mapped():
    inline, async_ = _probe(None, XLA_PROBE), _probe(None, XLA_PROBE, MMFUSE_CPU_DISPATCH="async")
    assert inline == {**inline, "malloc_tuned": True, "cpu_inline": True, "gc_tuned": True,
                      "gc_threshold": [50_000, 10, 10]}
    assert async_ == {**async_, "malloc_tuned": True, "cpu_inline": False}
    pages = 24 * 2 ** 20 * 4 // 4096  # one fresh 96 MB temporary
    # The median call: on a busy machine (the suite's other worker) an occasional inline call still maps
    # afresh (seen: 1 call of 9 in 2 of 6 probes, the other 8 at 0-5 faults); async maps on every call.
    assert statistics.median(async_["faults"]) > pages // 2, (async_, inline)  # a pool thread's arena
    assert statistics.median(inline["faults"]) < pages // 20, (inline, async_)  # the main arena keeps it


def test_tune_gc_sets_the_threshold_and_default_keeps_cpythons():
    code = ("import gc, json; before = gc.get_threshold(); from mmfuse_jax import runtime; "
            "t = runtime.tune_gc(); print(json.dumps([t, before, gc.get_threshold()]))")
    tuned, before, after = _probe(None, code)
    assert tuned is True and after == [50_000, 10, 10] != before
    assert _probe(None, code, MMFUSE_GC="default") == [False, before, before]


def test_tune_malloc_is_idempotent():
    from mmfuse_jax import runtime

    assert runtime.tune_malloc() == runtime.tune_malloc()


# A fresh interpreter: after tune_malloc, mallocs 1.5 GB from the main thread (never touched, so nothing is
# first-touched), frees it and prints the program break before, with and after the block (sbrk(0)).
BRK_PROBE = """
import ctypes, json
from mmfuse_jax import runtime
tuned = runtime.tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, (ctypes.c_ssize_t,)
before = libc.sbrk(0)
p = libc.malloc(3 * 2 ** 29)
held = libc.sbrk(0)
libc.free(p)
print(json.dumps({"tuned": tuned, "grown": held - before, "after_free": libc.sbrk(0) - before}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tuned_malloc_keeps_a_freed_heap_top_over_2_gb():
    # The block plus glibc's 1 GB top pad leaves a free heap top over 2 GB, more than mallopt's largest
    # positive trim threshold (2**31 - 1), so the threshold is -1 (no trimming at all): KuDA's step freed a
    # ~1.4 GB temporary this way and first-touched it again on every step (334,000 page faults).
    r = _probe(None, BRK_PROBE)
    assert r["tuned"] is True and r["grown"] >= 3 * 2 ** 29, r  # the block came from the main heap
    assert r["after_free"] == r["grown"], r  # and the heap kept it


# A fresh interpreter: with or without `unrolled_threefry` (MMFUSE_THREEFRY), one jitted program of random
# draws (raw bits, normals, a flax Dropout output, a folded key); prints a digest of each result's bytes and
# whether the compiled program still has a loop.
THREEFRY_PROBE = """
import hashlib, json
from mmfuse_jax import runtime
on = runtime.unrolled_threefry()
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np

@jax.jit
def draws(key):
    k1, k2, k3 = jax.random.split(key, 3)
    drop = nn.Dropout(0.1).apply({}, jnp.ones((3, 50, 64)), deterministic=False, rngs={"dropout": k3})
    return {"bits": jax.random.bits(k1, (1001,), jnp.uint32), "normal": jax.random.normal(k2, (257,)),
            "dropout": drop, "fold_in": jax.random.fold_in(key, 5)}

key = jax.random.PRNGKey(7)
out = draws(key)
hlo = draws.lower(key).compile().as_text()
print(json.dumps({"on": on, "loop": " while(" in hlo, "dropped": int((np.asarray(out["dropout"]) == 0).sum()),
                  **{k: hashlib.sha256(np.asarray(v).tobytes()).hexdigest() for k, v in out.items()}}))
"""


def test_unrolled_threefry_draws_the_same_bits_in_one_loop_free_program():
    unrolled = _probe(None, THREEFRY_PROBE, MMFUSE_THREEFRY="unrolled")
    rolled = _probe(None, THREEFRY_PROBE, MMFUSE_THREEFRY="rolled")
    assert unrolled["on"] is True and rolled["on"] is False
    assert rolled["loop"] and not unrolled["loop"], (rolled, unrolled)  # the switch changes the program...
    assert 0 < unrolled["dropped"] < 3 * 50 * 64 // 2, unrolled
    assert unrolled == {**rolled, "on": True, "loop": False}  # ...and not one bit of what it draws


def test_compilation_cache_takes_jax_then_mmfuse_xla_cache_then_the_default(tmp_path, monkeypatch, capsys):
    import jax

    from mmfuse_jax import runtime

    saved = {name: getattr(jax.config, name) for name in
             ("jax_compilation_cache_dir", "jax_compilation_cache_max_size", "jax_enable_compilation_cache")}
    for var in ("JAX_COMPILATION_CACHE_MAX_SIZE", "MMFUSE_XLA_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "a_file").write_text("")

    def fresh(**env):  # the cache off, as in a new process, and the environment given
        jax.config.update("jax_compilation_cache_dir", None)
        for var, value in env.items():
            monkeypatch.setenv(var, value)

    try:
        fresh()
        home = str(tmp_path / "xdg" / "mmfuse_jax" / "xla")
        assert runtime.compilation_cache() == home and os.path.isdir(home)
        assert jax.config.jax_compilation_cache_dir == home
        assert jax.config.jax_compilation_cache_max_size == runtime.CACHE_MAX_BYTES
        assert runtime.compilation_cache(default=str(tmp_path / "other")) == home  # one already set is kept
        fresh()
        store = str(tmp_path / "store" / ".xla_cache")
        assert runtime.compilation_cache(default=store) == store == jax.config.jax_compilation_cache_dir
        fresh(MMFUSE_XLA_CACHE=str(tmp_path / "mine"))
        assert runtime.compilation_cache(default=store) == str(tmp_path / "mine")
        fresh(MMFUSE_XLA_CACHE="off")
        assert runtime.compilation_cache() is None and jax.config.jax_compilation_cache_dir is None
        monkeypatch.delenv("MMFUSE_XLA_CACHE")
        fresh()
        jax.config.update("jax_enable_compilation_cache", False)  # what JAX_ENABLE_COMPILATION_CACHE=false sets
        assert runtime.compilation_cache() is None and jax.config.jax_compilation_cache_dir is None
        jax.config.update("jax_enable_compilation_cache", True)
        fresh(MMFUSE_XLA_CACHE=str(tmp_path / "a_file" / "xla"))  # cannot be created: off, with one note
        capsys.readouterr()
        assert runtime.compilation_cache() is None and jax.config.jax_compilation_cache_dir is None
        err = capsys.readouterr().err
        assert err.startswith("note: no compilation cache: ") and "a_file" in err and err.count("\n") == 1
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)


def test_capped_cache_still_grows_over_entries_written_without_a_cap(tmp_path):
    """Entries an uncapped process wrote (no ``<key>-atime`` beside them) would make JAX's eviction fail on
    every later write; a fresh process with the cap on still writes (and the old entries get access times)."""
    folder = str(tmp_path / "xla")
    program = "import jax, jax.numpy as jnp; print(jax.jit(lambda x: x * {k} + 1)(jnp.ones(3)).sum())"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": folder, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("MMFUSE_XLA_CACHE", None)
    r = subprocess.run([sys.executable, "-c", program.format(k=2)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    old = {n for n in os.listdir(folder) if n.endswith("-cache")}
    assert old and not any(n.endswith("-atime") for n in os.listdir(folder))  # written without a cap
    capped = (f"from mmfuse_jax import runtime; assert runtime.compilation_cache(default={folder!r}) == {folder!r}; "
              + program.format(k=3))
    env.pop("JAX_COMPILATION_CACHE_DIR")
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", capped], env=env, capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    names = os.listdir(folder)
    assert {n for n in names if n.endswith("-cache")} > old  # the new program was written
    assert all(n.removesuffix("-cache") + "-atime" in names for n in names if n.endswith("-cache"))
