"""python -m mmfuse_jax.compare: one row per run with metrics, parameters and step time."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import pytest
from conftest import REPO
from test_predictor import trained_run

from mmfuse_jax import compare


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def _other_run(tmp_path) -> str:
    """A second run folder: another model with known metrics and throughput, no checkpoint."""
    workdir = str(tmp_path / "other")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model_name": "text_only", "batch_size": 16, "dataset": {"name": "synthetic_demo"}}, f)
    with open(os.path.join(workdir, "eval_test.json"), "w") as f:
        json.dump({"metrics": {"acc": 0.575, "f1": 0.3865, "weighted_f1": 0.41}}, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        # 1.6 s (compiling), 0.1 s, 0.08 s per step of 16 examples
        f.writelines(json.dumps({"step": 1, "train_loss": 1.0, "examples_per_sec": eps}) + "\n"
                     for eps in (10.0, 160.0, 200.0))
    return workdir


def test_table_rows(run, tmp_path):
    from mmfuse_jax import Predictor

    other = _other_run(tmp_path)
    header, cells = compare.compare([run["workdir"], other, str(tmp_path)])  # tmp_path: not a run, skipped
    assert header == ["run", "model", "dataset", "acc", "f1", "weighted_f1", "open_acc", "open_f1",
                      "open_f1_known", "open_f1_oos", "params", "ms/step"]
    ours, theirs = (dict(zip(header, c)) for c in cells)
    with open(os.path.join(run["workdir"], "eval_test.json")) as f:
        rec = json.load(f)
    assert ours["model"] == "early_fusion" and ours["dataset"] == "synthetic_mintrec2_tiny"
    assert ours["acc"] == f"{100 * rec['metrics']['acc']:.2f}"
    assert ours["open_f1_oos"] == f"{100 * rec['open_intent']['f1_oos']:.2f}"
    params = Predictor.from_workdir(run["workdir"]).params
    assert ours["params"] == f"{sum(x.size for x in jax.tree_util.tree_leaves(params)):,}"
    assert float(ours["ms/step"]) > 0
    assert theirs == {"run": "other", "model": "text_only", "dataset": "synthetic_demo", "acc": "57.50",
                      "f1": "38.65", "weighted_f1": "41.00", "open_acc": "–", "open_f1": "–",
                      "open_f1_known": "–", "open_f1_oos": "–", "params": "–", "ms/step": "100.0"}


def test_parameter_count_is_the_models(run):
    """The count comes from the checkpoint's arrays (not Orbax metadata) and equals the model's own."""
    from mmfuse_jax.predictor import load_run_config
    from mmfuse_jax.training import loop

    exp = loop.build(load_run_config(run["workdir"]), data=False)
    batch = {k: jax.numpy.asarray(v) for k, v in exp.dummy_batch().items()}
    shapes = jax.eval_shape(lambda k: exp.model.init(k, batch, train=False)["params"], jax.random.PRNGKey(0))
    expected = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
    assert expected > 1000 and compare.count_params(run["workdir"]) == expected
    assert compare.count_params(run["root"]) is None  # no best checkpoint: an empty cell


def test_step_time_is_the_median():
    recs = [{"examples_per_sec": e} for e in (1.0, 32.0, 64.0)] + [{"acc": 1.0}]
    assert compare.step_time(recs, 32) == pytest.approx(1.0)
    assert compare.step_time([], 32) is None


def test_cli_prints_and_writes_markdown(run, tmp_path):
    other, out = _other_run(tmp_path), str(tmp_path / "table.md")
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.compare", run["workdir"], other, "--metrics=acc,f1",
                        f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["run", "model", "dataset", "acc", "f1", "params", "ms/step"]
    assert lines[3].split()[:5] == ["other", "text_only", "synthetic_demo", "57.50", "38.65"]
    with open(out) as f:
        md = f.read().splitlines()
    assert md[2] == "| run | model | dataset | acc | f1 | params | ms/step |"
    assert md[5] == "| other | text_only | synthetic_demo | 57.50 | 38.65 | – | 100.0 |"
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.compare", str(tmp_path / "nothing")], cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and "no run folders" in r.stderr and "Traceback" not in r.stderr
