"""`make demo`'s job (`python -m mmfuse_jax.demo`), called in the test's process on the tiny preset: every
run trained, evaluated from its best checkpoint and reported, then the tables and the environment line. The
demo's own presets (800 training examples, 12+ epochs, five runs: ~75 s on 2 cores) are what `make demo`
runs; here one short run of the same code path, and the open-intent table's layout from given results."""
from __future__ import annotations

import json
import os

import pytest

from mmfuse_jax import demo, runtime


@pytest.mark.slow
def test_demo_trains_evaluates_reports_and_prints_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the presets' synthetic data are written under ./data
    # the host tuning is for a process of its own (its allocator settings would stay in this test process)
    monkeypatch.setattr(runtime, "tune_host", lambda: {})
    short = {"num_epochs": 1, "dataset.num_buckets": 1, "mesh.devices": 1}
    monkeypatch.setitem(demo.RUNS, "intent", [("text_only", "text_only", "tiny", short)])
    runs = tmp_path / "runs"
    demo.main([f"--workdir={runs}", "--suites=intent"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    title = lines.index("Synthetic MIntRec layout (x100):")
    assert lines[title + 1].split() == ["run", "dev", "acc", "dev", "f1", "dev", "weighted_f1",
                                        "test", "acc", "test", "f1", "test", "weighted_f1"]
    row = lines[title + 2].split()
    with open(runs / "text_only" / "eval_test.json") as f:
        test = json.load(f)["metrics"]
    assert row[0] == "text_only" and len(row) == 7
    assert [float(v) for v in row[4:]] == pytest.approx([100 * test[m] for m in ("acc", "f1", "weighted_f1")],
                                                         abs=0.006)
    assert os.path.exists(runs / "text_only" / "report.md") and os.listdir(runs / "text_only" / "plots")
    assert any(line.startswith("environment: jax ") for line in lines)
    assert lines[-1].startswith("demo finished in ") and lines[-1].endswith(f"runs in {runs}")


def test_open_intent_table_has_the_in_scope_and_doc_columns():
    results = {"dyken_hyena_oos": {"test": {"acc": 0.98, "f1": 0.975},
                                   "test (open intent)": {"acc": 0.692, "f1": 0.5814, "f1_known": 0.5767,
                                                          "f1_oos": 0.722}}}
    table = demo._table("title", results, demo.OPEN_INTENT_COLUMNS).splitlines()
    assert table[0] == "title"
    assert table[1].split() == ["run", "test", "acc", "test", "f1", "open", "acc", "open", "f1", "open", "f1_known",
                                "open", "f1_oos"]
    assert table[2].split() == ["dyken_hyena_oos", "98.00", "97.50", "69.20", "58.14", "57.67", "72.20"]
