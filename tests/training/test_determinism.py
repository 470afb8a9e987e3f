"""Same seed and config => the same numbers, across processes: a tiny open-intent (MIntRec2.0 layout)
run trained and evaluated twice writes the same metrics, evaluations, predictions, DOC thresholds and
checkpoints (everything but wall-clock throughput, timestamps and event files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, synthetic_dataset
from mult_fixtures import load_config

from mmfuse_jax.training.checkpoint import checkpoint_steps, read_checkpoint

pytestmark = pytest.mark.slow


def _train_and_eval(workdir: str, data_root: str) -> None:
    flags = [f"--config={REPO}/configs/dyken_hyena.py:tiny_mintrec2", f"--workdir={workdir}",
             f"--config.dataset.root={data_root}", f"--config.dataset.bert_path={data_root}/bert",
             "--config.num_epochs=1", "--config.dataset.num_buckets=1"]  # one shape: one compile per step function
    # different hash seeds per process; each process compiles for itself (no session compilation cache)
    env = {**os.environ, "PYTHONHASHSEED": str(len(workdir)), "JAX_ENABLE_COMPILATION_CACHE": "false"}
    for script in ("train.py", "eval.py"):
        r = subprocess.run([sys.executable, script, *flags], cwd=REPO, capture_output=True, text=True,
                           timeout=900, check=False, env=env)
        assert r.returncode == 0, r.stderr[-3000:]


def _numbers(workdir: str) -> dict:
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        out["metrics"] = [{k: v for k, v in json.loads(line).items() if k != "examples_per_sec"} for line in f]
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if name.startswith("eval_") or name == "doc_thresholds.json":
            with open(path) as f:
                out[name] = json.load(f)
        elif name.endswith(".npz"):
            with np.load(path) as z:
                out[name] = {k: z[k] for k in z.files}
    for which in ("best", "last"):
        out[which] = [(step, read_checkpoint(workdir, which, step)) for step in checkpoint_steps(workdir, which)]
    return out


def _assert_equal(a, b, where="") -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
    else:
        assert a == b, (where, a, b)


def test_open_intent_run_is_deterministic(tmp_path):
    data_root = str(tmp_path / "data")  # the preset's benchmark, prepared by the first run, reused by the second
    config = load_config("dyken_hyena", "tiny_mintrec2")
    config.dataset.root = data_root
    synthetic_dataset(config.dataset)
    first, second = str(tmp_path / "first"), str(tmp_path / "second_run")
    _train_and_eval(first, data_root)
    _train_and_eval(second, data_root)
    a, b = _numbers(first), _numbers(second)
    assert a["best"] and a["eval_test.json"]["open_intent"]
    _assert_equal(jax.device_get(a), jax.device_get(b))
