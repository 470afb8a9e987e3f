"""The embedding analysis: PCA and class separation by hand; the plot from a run's saved predictions."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from mmfuse_jax import runfiles
from mmfuse_jax.analysis import embeddings

CONFIG = {"model_name": "text_only", "preset": "mintrec2", "dataset": {"name": "mintrec2", "format": "mintrec2",
                                                                       "oos_label": 30}}


def test_pca_and_class_separation_by_hand():
    # Points on the line y = 2x (+ a tiny z): PC 1 carries all the variance, along (1, 2)/√5.
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [3.0, 6.0, 1e-9]])
    coords, ratio = embeddings.pca_2d(x)
    assert ratio[0] == pytest.approx(1.0) and ratio[1] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(np.array([-1.5, -0.5, 0.5, 1.5]) * np.sqrt(5)))
    # Two classes at -1/+1 (means), each spread ±0.5: between = 4·1, within = 4·0.25.
    pts = np.array([[-1.5], [-0.5], [0.5], [1.5]])
    assert embeddings.class_separation(pts, np.array([0, 0, 1, 1])) == pytest.approx(4.0)
    assert embeddings.class_separation(np.array([[0.0], [0.0], [1.0]]), np.array([0, 0, 1])) == float("inf")


def _fake_run(tmp_path) -> tuple[str, dict]:
    """A finished run's files: config.json and test predictions, two tight in-scope classes + OOS rows."""
    run = str(tmp_path / "run")
    os.makedirs(run)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    rng = np.random.default_rng(0)
    label = np.array([0] * 6 + [1] * 6 + [30] * 3)
    centre = np.where(label[:, None] == 0, -3.0, 3.0) * np.ones((1, 5))
    pred = {"logits": rng.normal(size=(15, 30)), "label": label, "embedding": centre + 0.1 * rng.normal(size=(15, 5))}
    runfiles.save_predictions(run, "test", pred)
    return run, runfiles.load_predictions(run, "test")


def test_analysis_plots_the_saved_embeddings(tmp_path):
    run, pred = _fake_run(tmp_path)
    sections = embeddings.analysis(run, CONFIG, {"test": pred}, str(tmp_path / "plots"))
    assert [os.path.basename(s.path) for s in sections] == ["embeddings_test.png"]
    known = pred["label"] < 30
    sep = embeddings.class_separation(pred["embedding"][known].astype(np.float32), pred["label"][known])
    assert sep > 100 and f"= {sep:.3f}" in sections[0].title
    assert embeddings.analysis(run, CONFIG, {"test": {"prediction": np.zeros(3), "label": np.zeros(3)}}, run) == []


def test_the_command_writes_the_png_and_refuses_runs_without_embeddings(tmp_path):
    run, pred = _fake_run(tmp_path)
    out = str(tmp_path / "plots" / "emb.png")
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.analysis.embeddings", f"--workdir={run}", f"--out={out}"],
                       check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wrote {out}: 15 test embeddings" in r.stdout
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (780, 1080)  # 9 x 6.5 in at 120 dpi
    runfiles.save_predictions(run, "dev", {"logits": pred["logits"], "label": pred["label"]})
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.analysis.embeddings", f"--workdir={run}", "--split=dev"],
                       check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "predictions_dev.npz: embedding expected the model's embeddings" in r.stderr
    assert not os.path.exists(os.path.join(run, "plots", "embeddings_dev.png"))
