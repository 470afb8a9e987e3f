"""The embedding analysis: PCA and class separation by hand, and the command writes its PNG."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, tiny_config

from mmfuse_jax.analysis import embeddings


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


def test_the_command_writes_the_png(tiny_synthetic, tmp_path):
    from mmfuse_jax.training import loop

    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(tiny_config("text_only", tiny_synthetic, num_epochs=1), workdir)
    out = str(tmp_path / "plots" / "emb.png")
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.analysis.embeddings",
                        f"--config={REPO}/configs/text_only.py:tiny", f"--workdir={workdir}", f"--out={out}",
                        f"--config.dataset.root={tiny_synthetic}", f"--config.dataset.bert_path={tiny_synthetic}/bert",
                        "--config.dataset.synthetic={}"], check=False, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wrote {out}: 40 test embeddings" in r.stdout
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (780, 1080)  # 9 x 6.5 in at 120 dpi
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.analysis.embeddings",
                        f"--config={REPO}/configs/text_only.py:tiny", f"--workdir={tmp_path}/none",
                        f"--out={tmp_path}/x.png", f"--config.dataset.root={tiny_synthetic}",
                        f"--config.dataset.bert_path={tiny_synthetic}/bert", "--config.dataset.synthetic={}"],
                       check=False, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "no best checkpoint" in r.stderr and not os.path.exists(f"{tmp_path}/x.png")


def test_ratio_dominance_by_hand():
    from mmfuse_jax.analysis import ratios

    r = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    label, pred = np.array([0.0, 1.0, -1.0, 0.5]), np.array([0.2, 1.0, -0.6, 0.0])
    d = ratios.dominance(r, label, pred)
    assert [d[m]["count"] for m in ratios.MODALITY_ORDER] == [2, 1, 1]
    assert d["text"]["share"] == 0.5 and d["text"]["mae_when_dominant"] == pytest.approx((0.2 + 0.4) / 2)
    assert d["audio"]["mean_weight"] == pytest.approx(1.25 / 4) and d["audio"]["mae_when_dominant"] == 0.5
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        ratios.dominance(r[:, :2])


def test_ratio_command_draws_the_plot_and_refuses_runs_without_ratios(tmp_path):
    from mmfuse_jax import report

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    r = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    report.save_predictions(str(tmp_path), "test", {"ratio": r, "label": rng.normal(size=50),
                                                   "prediction": rng.normal(size=50)})
    cmd = [sys.executable, "-m", "mmfuse_jax.analysis.ratios", f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    top = np.bincount(r.argmax(1), minlength=3)
    assert f"text: dominant in {100 * top[0] / 50:.1f}% of samples" in out.stdout
    import matplotlib.image

    assert matplotlib.image.imread(str(tmp_path / "plots" / "ratios_test.png"))[..., :3].std() > 0.05
    report.save_predictions(str(tmp_path), "dev", {"label": np.zeros(3), "prediction": np.zeros(3)})
    out = subprocess.run(cmd + ["--split=dev"], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "ratio_mode=paper" in out.stderr
