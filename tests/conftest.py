"""Shared fixtures. JAX sees 4 CPU devices in every test, so the sharded code path is the one tested."""
from __future__ import annotations

import csv
import os
import pickle
import shutil
import sys
import tempfile

# One folder per test session, shared by both xdist workers and every train.py/eval.py subprocess they
# start (they inherit the environment): a persistent XLA compilation cache (the suite compiles the same
# tiny models many times, and on 2 CPU cores compiling is most of its time) and the synthetic datasets
# `synthetic_copy` writes once. Fresh each session and removed at its end, so a run from a clean clone
# pays what a clean clone pays. Set before jax is imported: jax reads these at import.
_OWN_SHARED = "MMFUSE_TESTS_SHARED" not in os.environ
if _OWN_SHARED:
    os.environ["MMFUSE_TESTS_SHARED"] = tempfile.mkdtemp(prefix="mmfuse-tests-")
SHARED = os.environ["MMFUSE_TESTS_SHARED"]
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(SHARED, "xla"))
# Every program is written, however fast it compiled: the CLI subprocesses of the kill-and-resume tests and
# the experiments' runs read back the init pieces and small programs another process compiled. Measured
# and not kept: a 0.1 s minimum (tests/layers plus three model test files in one process 104.8 / 105.7 ->
# 102.8 / 101.3 s, but test_kill_resume.py 78.8 -> 87.6 s, and the experiments' tests 13 s slower in a
# clean-clone run beside its parent).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite's models are tiny: compiling them costs more than running them. LLVM's backend optimisation
# level 0 for every program the suite compiles (in-process and in the CLI subprocesses, which inherit
# the environment) cuts compile time by about 40 % (measured: the MVCL-DAF++ and DyKen-Hyena model tests,
# learning tests included, 448 s -> 283 s); XLA's own HLO passes still run. XLA:CPU's older loop emitters
# instead of its MLIR fusion emitters take another 40 % off (the tiny DyKen-Hyena train step 5.4 -> 3.3 s to
# compile; a tiny experiment's tables unchanged). One LLVM module per program instead of XLA's parallel
# codegen splits: on 2 cores shared by two workers the split's threads gain nothing and splitting costs
# CPU (KuDA's tiny train step: 1.7 s in `SplitModule` of ~10 s in the compile's profile; compile CPU time
# 8.2 -> 6.6 s, HCT-DMG 6.5 -> 6.0 s, means of 5 fresh processes; the same first-step losses: only how the
# code is partitioned changes; the whole suite from clean clones, one after the other: 15.7 -> 14.8 min).
# Users' runs keep the defaults.
# JAX's own (rolled) Threefry lowering on CPU, not `runtime.unrolled_threefry`'s: the same bits
# (tests/test_runtime.py), a smaller program to compile (a text_only step 6.1 -> 5.0 s).
os.environ.setdefault("MMFUSE_THREEFRY", "rolled")
# No Python traceback frames in the MLIR locations of the programs the suite compiles (JAX's default keeps
# up to 100 per op, which XLA carries through every pass as metadata): tiny train steps compile 3-8 % faster
# (KuDA 4.18/4.35 -> 3.90/3.86 s, HCT-DMG 3.91/3.64 -> 3.60/3.39 s, MVCL-DAF++ 3.43/3.57 -> 3.37/3.43 s, two
# fresh processes each). Ops keep their `op_name` (the model path); only the source lines go.
os.environ.setdefault("JAX_TRACEBACK_IN_LOCATIONS_LIMIT", "0")


def _accepted(flags: list[str]) -> list[str]:
    """``flags`` less those this jaxlib's XLA does not know. XLA ends the process at an unknown flag in XLA_FLAGS
    (jaxlib 0.11 has no --xla_cpu_use_fusion_emitters: Python 3.12's newest JAX and the GPU machines' image), so a
    child process starts the CPU backend with them first, and each flag it reports unknown is left out."""
    import subprocess

    flags = list(flags)
    while flags:
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()}
        r = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True,
                           text=True, check=False)
        unknown = [f for f in flags if f"Unknown flag in XLA_FLAGS: {f.split('=')[0]}" in r.stderr]
        if r.returncode == 0 or not unknown:  # any other failure shows itself in the tests
            return flags
        flags = [f for f in flags if f not in unknown]
    return flags


# Decided once, by the process that starts the session; the xdist workers and the CLI subprocesses inherit it.
if "MMFUSE_TESTS_XLA_FLAGS" not in os.environ:
    _wanted = [f for f in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                           "--xla_cpu_parallel_codegen_split_count=1")
               if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_accepted(_wanted)]).strip()
    os.environ["MMFUSE_TESTS_XLA_FLAGS"] = os.environ["XLA_FLAGS"]

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)  # before any backend starts

from mmfuse_jax import runtime  # noqa: E402

# Python's cyclic GC as our CLIs run it (`runtime.tune_gc`, which the CLI subprocesses call themselves):
# tracing, which the suite does far more than running, then spends a fifth less time in the collector
# (tests/models/test_hct_dmg.py + test_mult.py in one process, 3 runs each: 56.7-59.0 -> 49.8-53.7 s).
runtime.tune_gc()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def pytest_unconfigure(config):
    if _OWN_SHARED:  # the process that made the folder (the xdist controller) removes it
        shutil.rmtree(SHARED, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """The end-to-end (`slow`) tests first, so that xdist hands them out at the start rather than
    leaving one to run alone at the end (a stable sort: the same order in every worker)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# Tests that share an expensive module fixture (a trained run, built models): `make test`'s xdist workers
# (`--dist loadgroup`) run each group on one worker, so the fixture is built once in the session, not once
# per worker (measured before: the KuDA fusion variants' 17 s fixture, the finished run of the CLI error
# tests 11 s, MulT's 11 s, ... each built on both workers). A node id starting with a prefix is in its
# group; every other test is scheduled alone. The groups are given to xdist by `pytest_xdist_make_scheduler`
# below: pytest-xdist's own `xdist_group` mark has no effect under pytest 9 (xdist 3.8 writes the group into
# `item._nodeid`, which pytest 9 no longer reads).
GROUPS = {
    "tests/models/test_models.py": "test_models", "tests/models/test_kuda.py": "test_kuda",
    "tests/models/test_kuda_fusion.py": "test_kuda_fusion", "tests/models/test_hct_dmg.py": "test_hct_dmg",
    "tests/models/test_hct_dmg_stages.py": "test_hct_dmg_stages", "tests/models/test_mult.py": "test_mult",
    "tests/models/test_mag_bert.py": "test_mag_bert", "tests/models/test_mvcl_daf.py": "test_mvcl_daf",
    "tests/encoders/test_roberta.py": "test_roberta", "tests/cli/test_user_errors.py": "finished_run",
    "tests/training/test_faults.py": "test_faults", "tests/test_report.py": "test_report",
    "tests/test_predictor.py": "test_predictor",
    # the text_only baseline both comparisons train (test_train_e2e's module fixture)
    "tests/training/test_train_e2e.py::test_fusion_beats_text_only": "text_only_baseline",
    "tests/training/test_train_e2e.py::test_mvcl_daf_beats_text_only": "text_only_baseline",
}


def group_of(nodeid: str) -> str | None:
    """The `GROUPS` group of a test's node id, or None."""
    return next((group for prefix, group in GROUPS.items() if nodeid == prefix or
                 nodeid.startswith(prefix + ("::" if prefix.endswith(".py") else "["))), None)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown to a run without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` with `GROUPS`: xdist's group scheduler, each group one unit of work."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Scheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or super()._split_scope(nodeid)

    return Scheduling(config, log)


def synthetic_copy(dest: str, generator: str, spec) -> str:
    """``synthetic.GENERATORS[generator].write(dest, spec)``, written once per session (shared by the
    workers under a file lock) and copied: most of a write is initialising its random BERT."""
    import fcntl
    import hashlib

    from mmfuse_jax.data import synthetic

    src = os.path.join(SHARED, "data", hashlib.sha256(repr((generator, spec)).encode()).hexdigest()[:20])
    os.makedirs(os.path.dirname(src), exist_ok=True)
    with open(src + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(src + ".done"):
            shutil.rmtree(src, ignore_errors=True)
            synthetic.GENERATORS[generator].write(src, spec)
            open(src + ".done", "w").close()
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest


def synthetic_dataset(ds) -> str:
    """`synthetic_copy` of the benchmark a dataset config's ``synthetic`` field names, at its root."""
    from mmfuse_jax.data import synthetic

    return synthetic_copy(ds.root, ds.synthetic.generator, synthetic.spec_of(ds.synthetic))


def write_mintrec(root, rows, *, audio_dim=6, video_dim=5, extra_keys=0, seed=0, audio=None, video=None):
    """Write a MIntRec release under ``root``: rows are (split, season, episode, clip, text, label[, T_a, T_v]).

    Features are random unless ``audio``/``video`` dicts (key -> array) override entries.
    Video is stored as the release does: a list of (1, D) arrays per key.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "audio_data"), exist_ok=True)
    os.makedirs(os.path.join(root, "video_data"), exist_ok=True)
    by_split = {"train": [], "dev": [], "test": []}
    a, v = {}, {}
    for row in rows:
        split, season, episode, clip, text, label, *lens = row
        t_a, t_v = lens if lens else (7, 4)
        by_split[split].append((season, episode, clip, text, label))
        key = f"{season}_{episode}_{clip}"
        a[key] = rng.standard_normal((t_a, audio_dim)).astype(np.float32)
        v[key] = [rng.standard_normal((1, video_dim)).astype(np.float32) for _ in range(t_v)]
    for i in range(extra_keys):  # keys no TSV row uses, as in the real pickles
        a[f"S99_E99_{i}"] = rng.standard_normal((3, audio_dim)).astype(np.float32)
        v[f"S99_E99_{i}"] = [rng.standard_normal((1, video_dim)).astype(np.float32)]
    a.update(audio or {})
    v.update(video or {})
    for split, split_rows in by_split.items():
        with open(os.path.join(root, f"{split}.tsv"), "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["season", "episode", "clip", "text", "label"])
            w.writerows(split_rows)
    with open(os.path.join(root, "audio_data", "audio_feats.pkl"), "wb") as f:
        pickle.dump(a, f)
    with open(os.path.join(root, "video_data", "video_feats.pkl"), "wb") as f:
        pickle.dump(v, f)
    return root


SMALL_ROWS = [
    ("train", "S05", "E16", "329", "i am so sorry", "Apologise", 9, 6),
    ("train", "S01", "E02", "7", "can you help me with this", "Ask for help", 5, 3),
    ("train", "S02", "E03", "11", "thanks a lot", "Thank", 12, 8),
    ("dev", "S03", "E01", "4", "that was great", "Praise", 4, 2),
    ("test", "S04", "E09", "120", "see you later", "Leave", 6, 5),
]


@pytest.fixture
def mintrec_root(tmp_path):
    return write_mintrec(str(tmp_path / "MIntRec"), SMALL_ROWS, extra_keys=3)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic benchmark (MIntRec layout + random BERT), shared by the session."""
    from mmfuse_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("synthetic") / "bench")
    return synthetic_copy(root, "mintrec", synthetic.SyntheticSpec(train=96, dev=40, test=40, bert_hidden=24,
                                                                   bert_heads=2))


# config.compiler_options for the suite's longer runs (several epochs of a tiny preset): LLVM's level 1 for
# their train and eval steps instead of the level 0 above. Measured (tiny MVCL-DAF++, one CPU device): the
# train step 244 -> 95 ms and the eval step 31 -> 12 ms for ~4 s more compile, which a one-epoch run of
# 10 steps would not win back. And one device (`mesh.devices`): a tiny model's batch split over 4 fake
# devices on 2 cores runs slower than whole (test_train_e2e's text_only, early_fusion and DyKen-Hyena runs
# 42.4 -> 34.8 s); the loop on several devices stays tested in-process (test_sweep, test_host_syncs,
# test_predictor, test_hct_dmg's end-to-end run, test_distributed) and sharded = one device in test_step.
LONG_RUN = {"compiler_options": "xla_backend_optimization_level=1", "mesh.devices": 1}


def tiny_config(model: str, root: str, **overrides):
    """The `tiny` preset of ``configs/<model>.py`` pointed at ``root``."""
    import importlib.util

    from ml_collections import config_flags  # noqa: F401  (ensures ml_collections is importable)

    spec = importlib.util.spec_from_file_location(f"cfg_{model}", os.path.join(REPO, "configs", f"{model}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    c.dataset.root = root
    c.dataset.bert_path = os.path.join(root, "bert")
    c.dataset.synthetic = {}
    c.dataset.prepared_dir = ""
    return set_fields(c, **overrides)


def set_fields(config, **overrides):
    """``config`` with ``{'a.b': value}`` overrides applied in place (and returned)."""
    for k, v in overrides.items():
        target = config
        *path, leaf = k.split(".")
        for p in path:
            target = target[p]
        target[leaf] = v
    return config
