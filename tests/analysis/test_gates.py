"""The gate analysis reads checkpoints written by `training.checkpoint.Checkpoints`, nothing else."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from flax import struct

from mmfuse_jax import analysis, registry
from mmfuse_jax.analysis import gates
from mmfuse_jax.errors import DataError
from mmfuse_jax.training.checkpoint import Checkpoints

CONFIG = {"model_name": "hct_dmg", "preset": "mosi", "dataset": {"name": "mosi", "format": "mult"}}


@struct.dataclass
class _State:
    step: jnp.ndarray
    params: dict


def _softmax(x):
    e = np.exp(np.asarray(x, np.float64) - np.max(x))
    return e / e.sum()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Three latest checkpoints (epochs 1, 1.5 mid-epoch, 2) of a run whose gate moves towards audio."""
    path = str(tmp_path_factory.mktemp("gates") / "run")
    ckpt = Checkpoints(path, keep=5)
    for step, logits, epoch, next_batch in ((4, [0.0, 0.0, 0.0], 1, 0), (6, [0.1, 0.5, -0.2], 1, 2),
                                            (8, [0.2, 1.0, -0.4], 2, 0)):
        params = {"gate_logits": jnp.asarray(logits, jnp.float32), "head": {"kernel": jnp.ones((2, 3))}}
        ckpt.save_latest(_State(step=jnp.asarray(step), params=params), {"epoch": epoch, "next_batch": next_batch})
    ckpt.close()
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    return path


def test_gate_history_from_checkpoints(run_dir):
    names = registry.get("hct_dmg").output_labels["gate"]
    history = gates.gate_history(run_dir, names)
    assert [(h["step"], h["epoch"]) for h in history] == [(4, 1), (6, 1.5), (8, 2)]
    np.testing.assert_allclose([history[-1]["gate"][m] for m in names], _softmax([0.2, 1.0, -0.4]), rtol=1e-6)
    assert [h["primary"] for h in history] == [names[0], names[1], names[1]]  # ties: the first, as argmax
    with pytest.raises(DataError, match="gate_logits expected 2 logits"):
        gates.gate_history(run_dir, ("text", "audio"))
    assert gates.gate_history(os.path.join(run_dir, "absent"), names) == []


def test_the_spec_dispatches_the_gate_analysis(run_dir, tmp_path):
    assert "gates" in registry.get("hct_dmg").analyses
    sections = analysis.run_all(run_dir, CONFIG, {}, str(tmp_path))  # no predictions needed
    assert [os.path.basename(s.path) for s in sections] == ["gates.png"]
    assert os.path.getsize(sections[0].path) > 1000
    assert analysis.run_all(str(tmp_path / "untrained"), CONFIG, {}, str(tmp_path)) == []


def test_the_command_prints_the_history(run_dir):
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.analysis.gates", f"--workdir={run_dir}"], check=False,
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["step", "epoch", "text", "audio", "video", "primary"]
    assert lines[3].split()[:2] == ["8", "2"] and lines[3].split()[-1] == "audio"
    assert os.path.exists(os.path.join(run_dir, "plots", "gates.png"))
