"""Plot primitives: what each figure shows (numbers, labels, titles), read back from the figure."""
from __future__ import annotations

import os

import numpy as np
import pytest

from mmfuse_jax import plots


@pytest.fixture
def drawn(monkeypatch):
    """Every figure `plots.save` writes, kept for inspection (the PNG is still written)."""
    figures = []
    save = plots.save

    def keep(fig, path, **kw):
        figures.append(fig)
        return save(fig, path, **kw)

    monkeypatch.setattr(plots, "save", keep)
    return figures


def _png(path: str) -> np.ndarray:
    from matplotlib import image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return image.imread(path)


def test_row_normalise_is_recall_per_true_class():
    cm = np.array([[3, 1, 0], [0, 0, 0], [10, 20, 170]])
    share = plots.row_normalise(cm)
    np.testing.assert_allclose(share, [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.05, 0.1, 0.85]])


def test_confusion_colours_are_row_shares_and_cells_show_counts(tmp_path, drawn):
    # A dominant last class (OOS: 200 rows) must not wash out the small classes' diagonal.
    cm = np.array([[3, 1, 0], [0, 2, 0], [10, 20, 170]])
    path = plots.confusion_matrix(cm, ["a", "b", "UNK"], str(tmp_path / "sub" / "cm.png"), "run, test")
    assert _png(path).shape[0] >= 300
    ax = drawn[0].axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), plots.row_normalise(cm))
    assert ax.images[0].get_clim() == (0.0, 1.0)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(0, 0): "3", (0, 1): "1", (1, 1): "2", (2, 0): "10", (2, 1): "20", (2, 2): "170"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (4)", "b (2)", "UNK (200)"]
    assert ax.get_xlabel() == "predicted class" and ax.get_title() == "run, test"


def test_zero_bars_stay_visible(tmp_path, drawn):
    path = plots.bars(["a", "b", "c"], np.array([0.5, 0.0, 0.25]), str(tmp_path / "f1.png"), "run", "F1 (x100)")
    ax = drawn[0].axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [50.0, plots.ZERO_BAR, 25.0]  # the F1 = 0 class gets a visible stub
    assert [t.get_text() for t in ax.texts] == ["0"] and "1 of 3 at 0" in ax.get_title()
    img = _png(path)[..., :3]
    red = np.array([0.839, 0.153, 0.157])  # tab:red, the stub's colour
    assert (np.abs(img - red).max(-1) < 0.05).sum() > 20
    plots.bars(["a"], np.array([0.5]), str(tmp_path / "f1b.png"), "run", "F1 (x100)")
    assert len(drawn[1].axes[0].texts) == 0 and "at 0" not in drawn[1].axes[0].get_title()


def test_learning_curves_name_the_run_and_their_axes(tmp_path, drawn):
    records = [{"step": s, "epoch": 1, "train_loss": 1.0 / s, "train_acc": 0.5} for s in (2, 4, 6)]
    records += [{"step": 6, "epoch": 1, "split": "dev", "acc": 0.4, "f1": 0.3}]
    path = plots.learning_curves(records, str(tmp_path / "c.png"), "text_only on mintrec: run_a", "f1")
    assert os.path.exists(path)
    fig = drawn[0]
    loss, dev = fig.axes
    assert fig._suptitle.get_text() == "text_only on mintrec: run_a"
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("training step", "loss")
    assert (dev.get_xlabel(), dev.get_ylabel()) == ("training step", "metric (x100)")
    assert [line.get_label() for line in dev.lines] == ["dev f1", "dev acc", "train acc"]  # early-stop metric first
    np.testing.assert_allclose(dev.lines[0].get_ydata(), [30.0])
    assert plots.learning_curves([], str(tmp_path / "none.png"), "x") is None


def test_prediction_scatter_and_class_scatter_write_pngs(tmp_path, drawn):
    rng = np.random.default_rng(0)
    label = rng.uniform(-1, 1, 20)
    plots.prediction_scatter(label, label + 0.1, str(tmp_path / "r.png"), "kuda on sims, test")
    assert (drawn[0].axes[0].get_xlabel(), drawn[0].axes[0].get_ylabel()) == ("label", "prediction")
    coords, labels = rng.normal(size=(6, 2)), np.array([0, 1, 1, 2, 5, 0])  # 5: out of scope
    plots.class_scatter(coords, labels, ["x", "y", "z"], str(tmp_path / "e.png"), "t", xlabel="PC 1", ylabel="PC 2")
    legend = [t.get_text() for t in drawn[1].axes[0].get_legend().get_texts()]
    assert legend == ["out of scope", "x", "y", "z"]
    assert _png(str(tmp_path / "e.png"))[..., :3].std() > 0.05
