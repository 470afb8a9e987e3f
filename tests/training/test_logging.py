"""metrics.jsonl on resume: later records dropped by one atomic rewrite, a line cut by a kill skipped."""
from __future__ import annotations

import json
import os

from mmfuse_jax.training.logging import MetricsWriter, read_metrics


def test_resume_keeps_records_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train_loss": 1.0 / s}) + "\n" for s in range(1, 6)]
    path.write_text("".join(lines) + '{"step": 6, "train_lo')  # the run was killed mid-write
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4, 5]
    writer = MetricsWriter(str(tmp_path), resume_step=3)
    assert path.read_text() == "".join(lines[:3]) and not os.path.exists(str(path) + ".tmp")
    writer.write({"step": 4, "train_loss": 0.3})
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4]
    MetricsWriter(str(tmp_path))  # a fresh run (no checkpoint) starts a new file
    assert read_metrics(str(tmp_path)) == []
