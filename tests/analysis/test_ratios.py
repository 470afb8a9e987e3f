"""Modality ratios: dominance by hand, names from the model spec, the command on a run's files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from mmfuse_jax import registry, runfiles
from mmfuse_jax.analysis import ratios

MODALITIES = ("text", "video", "audio")
CONFIG = {"model_name": "kuda", "preset": "sims", "dataset": {"name": "sims", "format": "mmsa"}}


def test_ratio_dominance_by_hand():
    r = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    label, pred = np.array([0.0, 1.0, -1.0, 0.5]), np.array([0.2, 1.0, -0.6, 0.0])
    d = ratios.dominance(r, MODALITIES, label, pred)
    assert [d[m]["count"] for m in MODALITIES] == [2, 1, 1]
    assert d["text"]["share"] == 0.5 and d["text"]["mae_when_dominant"] == pytest.approx((0.2 + 0.4) / 2)
    assert d["audio"]["mean_weight"] == pytest.approx(1.25 / 4) and d["audio"]["mae_when_dominant"] == 0.5
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        ratios.dominance(r[:, :2], MODALITIES)
    table = ratios.dominance_table(d)
    assert "| text | 50.0 % (2) | 0.350 | 0.300 |" in table


def test_modality_order_comes_from_the_spec(tmp_path, monkeypatch):
    assert registry.get("kuda").output_labels["ratio"] == MODALITIES and "ratios" in registry.get("kuda").analyses
    r = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    sections = ratios.analysis(str(tmp_path), CONFIG, {"test": {"ratio": r, "label": np.zeros(3),
                                                                 "prediction": np.zeros(3)}}, str(tmp_path))
    assert "| video | 66.7 % (2) |" in sections[0].markdown  # column 1 is video, as the spec says
    assert ratios.analysis(str(tmp_path), CONFIG, {"test": {"label": np.zeros(3)}}, str(tmp_path)) == []
    import dataclasses

    from mmfuse_jax.errors import ConfigError

    unnamed = dataclasses.replace(registry.get("kuda"), name="kuda_unnamed", output_labels={})
    monkeypatch.setitem(registry._MODELS, "kuda_unnamed", unnamed)
    with pytest.raises(ConfigError, match=r"'kuda_unnamed' declares no output_labels\['ratio'\]"):
        ratios.analysis(str(tmp_path), {**CONFIG, "model_name": "kuda_unnamed"}, {"test": {"ratio": r}}, str(tmp_path))


def test_the_command_draws_the_plot_and_refuses_runs_without_ratios(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    r = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(CONFIG, f)
    runfiles.save_predictions(str(tmp_path), "test", {"ratio": r, "label": rng.normal(size=50),
                                                     "prediction": rng.normal(size=50)})
    cmd = [sys.executable, "-m", "mmfuse_jax.analysis.ratios", f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    top = np.bincount(r.argmax(1), minlength=3)
    assert f"text: dominant in {100 * top[0] / 50:.1f}% of samples" in out.stdout
    assert f"video: dominant in {100 * top[1] / 50:.1f}% of samples" in out.stdout
    import matplotlib.image

    assert matplotlib.image.imread(str(tmp_path / "plots" / "ratios_test.png"))[..., :3].std() > 0.05
    runfiles.save_predictions(str(tmp_path), "dev", {"label": np.zeros(3), "prediction": np.zeros(3)})
    out = subprocess.run(cmd + ["--split=dev"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "ratio_mode=paper" in out.stderr
    assert not os.path.exists(tmp_path / "plots" / "ratios_dev.png")
