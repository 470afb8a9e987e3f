"""Command-line polish: --help lists models and presets, the resolved config is printed, predict.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_predictor import raw_split, trained_run


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_help_lists_every_model_and_its_presets():
    from mmfuse_jax import cli, registry

    r = _cli("train.py", "--help")
    assert "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    # the package's models; a test module that registered a toy model in this process (tests/training/
    # test_stages.py) registered it here only
    for name in [n for n in registry.names() if registry.get(n).build.__module__.startswith("mmfuse_jax.")]:
        row = next((line for line in lines if line.split()[:1] == [name]), None)
        assert row is not None, f"{name} missing from train.py --help"
        presets = cli.config_presets(name)
        if presets:
            assert row.split(None, 1)[1] == ", ".join(presets)
    assert any(line.split()[:1] == ["dyken_hyena"] and "tiny_mintrec2" in line for line in lines)
    assert "early_fusion" in _cli("eval.py", "--help").stdout


def test_resolved_config_printed_and_user_errors_are_one_line(tmp_path):
    r = _cli("train.py", f"--config={REPO}/configs/early_fusion.py:tiny", f"--workdir={tmp_path}/w",
             f"--config.dataset.root={tmp_path}/missing", "--config.dataset.synthetic={}", "--config.batch_size=8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stdout.startswith("resolved config")
    assert "  model_name: early_fusion" in r.stdout and "  batch_size: 8" in r.stdout  # the override
    assert os.path.exists(f"{tmp_path}/w/config.json")
    with open(f"{tmp_path}/w/config.json") as f:
        assert json.load(f)["batch_size"] == 8


def test_predict_py_writes_json_lines(run, tmp_path):
    from mmfuse_jax import Predictor

    test = raw_split(run, "test")[:3]
    np.save(tmp_path / "a0.npy", test[0]["audio"])
    np.save(tmp_path / "v0.npy", test[0]["video"])
    np.save(tmp_path / "a1.npy", test[1]["audio"])
    lines = [{"id": "u0", "text": test[0]["text"], "audio": "a0.npy", "video": str(tmp_path / "v0.npy")},
             {"id": "u1", "text": test[1]["text"], "audio": "a1.npy"},
             {"text": test[2]["text"]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    out = tmp_path / "out.jsonl"
    r = _cli("predict.py", f"--workdir={run['workdir']}", f"--input={tmp_path}/in.jsonl", f"--output={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    got = [json.loads(x) for x in out.read_text().splitlines()]
    expected = Predictor.from_workdir(run["workdir"]).predict_batch(
        [{"id": "u0", "text": test[0]["text"], "audio": test[0]["audio"], "video": test[0]["video"]},
         {"id": "u1", "text": test[1]["text"], "audio": test[1]["audio"]}, {"text": test[2]["text"]}])
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
    assert [g.get("id") for g in got] == ["u0", "u1", None]
    assert [g["missing_modalities"] for g in got] == [[], ["video"], ["audio", "video"]]
    # A wrong feature size: one line naming the file and the key, no traceback.
    np.save(tmp_path / "bad.npy", np.zeros((4, 3), np.float32))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "hi", "audio": "bad.npy"}) + "\n")
    r = _cli("predict.py", f"--workdir={run['workdir']}", f"--input={tmp_path}/bad.jsonl")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "bad.npy: audio expected features [T, 6] with T >= 1, got shape [4, 3]" in r.stderr
