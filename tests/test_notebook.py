"""notebooks/colab_tpu.ipynb runs top to bottom on CPU with the tiny preset (so it never rots)."""
from __future__ import annotations

import os

import pytest
from conftest import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "colab_tpu.ipynb")


def _parameters(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def test_notebook_executes_on_cpu(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    workdir, data = tmp_path / "run", tmp_path / "data"
    overrides = {"dataset.synthetic.train": 64, "dataset.synthetic.dev": 32, "dataset.synthetic.test": 32,
                 "dataset.synthetic.bert_hidden": 16, "dataset.synthetic.bert_heads": 2,
                 "dataset.synthetic.bert_layers": 1, "dataset.num_buckets": 1}
    # Injected after the parameters cell, as papermill does.
    nb.cells.insert(_parameters(nb) + 1, nbformat.v4.new_code_cell(
        f"MODEL, PRESET, WORKDIR, NUM_EPOCHS = 'early_fusion', 'tiny', {str(workdir)!r}, 1\n"
        f"DATA_ROOT, OVERRIDES = {str(data)!r}, {overrides!r}"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")  # the kernel's mesh spans 2 devices
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(REPO, "notebooks")}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "2 device(s)" in text and "mesh: {'data': 2, 'model': 1}" in text
    assert "early_fusion on synthetic_tiny (x100)" in text
    assert "text + audio + video:" in text and "missing: ['audio', 'video']" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # learning curves, confusion matrix, per-class F1
    assert (workdir / "report.md").exists() and any(n.startswith("events.out") for n in os.listdir(workdir))
