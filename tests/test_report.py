"""Run reports (report.md + PNG plots) and TensorBoard events beside metrics.jsonl."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from test_predictor import trained_run

from mmfuse_jax import ood, registry, report, runfiles


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


def _png_image(path: str) -> np.ndarray:
    from matplotlib import image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    return image.imread(path)


def test_report_has_eval_numbers_and_plots(run):
    workdir = run["workdir"]
    with open(os.path.join(workdir, "report.md")) as f:
        md = f.read()
    for split in ("dev", "test"):
        with open(os.path.join(workdir, f"eval_{split}.json")) as f:
            rec = json.load(f)
        # Two rows per split: the in-scope table, then the open-intent (DOC) table.
        rows = [[c.strip() for c in line.strip("|").split("|")[1:]]
                for line in md.splitlines() if line.startswith(f"| {split} |")]
        assert rows == [[f"{100 * v:.2f}" for v in rec[key].values()] for key in ("metrics", "open_intent")]
    assert "No paper numbers" in md  # a synthetic benchmark is no paper preset
    assert md.index("(plots/per_class_f1_test.png)") < md.index("(plots/embeddings_test.png)")  # task plots first
    for name in ("learning_curves", "confusion_test", "per_class_f1_test", "embeddings_test"):
        path = os.path.join(workdir, "plots", f"{name}.png")
        assert f"(plots/{name}.png)" in md
        img = _png_image(path)
        assert img.shape[0] >= 200 and img.shape[1] >= 300
        assert img[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_confusion_counts_are_the_doc_decisions(run):
    """The open-intent confusion matrix counts eval.py's DOC decisions (OOS = the last class)."""
    from mmfuse_jax import metrics

    workdir = run["workdir"]
    pred = runfiles.load_predictions(workdir, "test")
    thresholds = ood.load_doc_thresholds(workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    y_true, y_pred, names, kind = report.class_predictions(config, pred, thresholds)
    assert kind == "open intent, DOC" and names[-1] == "UNK" and len(names) == pred["logits"].shape[1] + 1
    np.testing.assert_array_equal(y_pred, ood.doc_predict(pred["logits"], thresholds, 30))
    with open(os.path.join(workdir, "eval_test.json")) as f:
        official = json.load(f)["open_intent"]
    assert metrics.open_intent(y_true, y_pred, 30) == pytest.approx(official)


def _fake_run(tmp_path, config: dict, metrics: dict, open_intent: dict | None = None, pred=None) -> str:
    workdir = str(tmp_path / "fake")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    rec = {"model": config["model_name"], "dataset": config["dataset"]["name"], "split": "test",
           "checkpoint_step": 7, "metrics": metrics}
    if open_intent:
        rec["open_intent"] = open_intent
    with open(os.path.join(workdir, "eval_test.json"), "w") as f:
        json.dump(rec, f)
    if pred is not None:
        runfiles.save_predictions(workdir, "test", pred)
    return workdir


def test_paper_numbers_beside_ours(tmp_path):
    config = {"model_name": "mvcl_daf", "preset": "mintrec", "early_stop_metric": "f1",
              "dataset": {"name": "mintrec", "format": "mintrec"}}
    ours = {"acc": 0.7512, "f1": 0.70, "weighted_f1": 0.7466, "weighted_prec": 0.76, "rec": 0.7301}
    workdir = _fake_run(tmp_path, config, ours)
    with open(report.write_report(workdir)) as f:
        md = f.read()
    assert "| acc (test) | 76.18 | 75.12 | -1.06 |" in md
    assert "| weighted_f1 (test) | 75.66 | 74.66 | -1.00 |" in md
    assert "MVCL-DAF++ (arXiv 2509.17446)" in md
    assert "## Plots" not in md  # no predictions and no metrics.jsonl: nothing to draw


def test_regression_report_with_the_specs_analysis(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.uniform(-1, 1, 50).astype(np.float32)
    ratio = rng.dirichlet(np.ones(3), size=50)
    config = {"model_name": "kuda", "preset": "sims", "early_stop_metric": "mae",
              "dataset": {"name": "sims", "format": "mmsa"}}
    workdir = _fake_run(tmp_path, config, {"acc_2": 0.8123, "mae": 0.4081, "corr": 0.6134},
                        pred={"prediction": label + 0.1 * rng.standard_normal(50), "label": label,
                              "embedding": np.zeros((50, 3)), "ratio": ratio})
    with open(report.write_report(workdir)) as f:
        md = f.read()
    assert "| test | 81.23 | 0.408 | 0.613 |" in md  # mae and corr as the papers print them
    assert _png_image(os.path.join(workdir, "plots", "regression_test.png")).size
    assert "embeddings_test.png" not in md  # the PCA plot is for classifiers
    # KuDA's spec declares the ratio analysis: its plot and its table, columns named by the spec.
    share = np.bincount(ratio.argmax(1), minlength=3) / 50
    assert "(plots/ratios_test.png)" in md
    for m, s in zip(registry.get("kuda").output_labels["ratio"], share):
        assert f"| {m} | {100 * s:.1f} % " in md


def test_report_names_no_model():
    """What differs per model comes from its spec: report.py never spells a model's name."""
    with open(report.__file__) as f:
        source = f.read()
    assert [name for name in registry.names() if f'"{name}"' in source or f"'{name}'" in source] == []


def test_after_evaluate_saves_predictions_and_doc_thresholds(tmp_path):
    rng = np.random.default_rng(1)
    config = {"model_name": "text_only", "preset": "x", "dataset": {"name": "mintrec2", "format": "mintrec2",
                                                                   "oos_label": 30, "doc_scale": 2.0}}
    train = {"logits": rng.normal(size=(60, 30)) * 4, "label": rng.integers(0, 31, 60)}
    test = {"logits": rng.normal(size=(20, 30)) * 4, "label": rng.integers(0, 31, 20),
            "embedding": rng.normal(size=(20, 4))}
    path = report.after_evaluate(str(tmp_path), config, {"test": test}, train=train, checkpoint_step=9)
    assert path == os.path.join(str(tmp_path), "report.md")
    np.testing.assert_array_equal(runfiles.load_predictions(str(tmp_path), "test")["logits"], test["logits"])
    np.testing.assert_allclose(ood.load_doc_thresholds(str(tmp_path), 9),
                               ood.fit_doc_thresholds(train["logits"], train["label"], 2.0))
    with pytest.raises(ValueError, match="checkpoint_step"):
        report.after_evaluate(str(tmp_path), config, {}, train=train)


def test_confusion_of_a_fake_open_intent_run_uses_the_saved_thresholds(tmp_path):
    config = {"model_name": "text_only", "preset": "x", "dataset": {"name": "mintrec2", "format": "mintrec2",
                                                                   "oos_label": 30}}
    logits = np.full((4, 30), -5.0)
    logits[[0, 1, 2], [0, 1, 1]] = 5.0  # confident rows 0-2; row 3 scores sigmoid(-5) everywhere -> OOS
    pred = {"logits": logits, "label": np.array([0, 1, 30, 30])}
    workdir = _fake_run(tmp_path, config, {"acc": 1.0}, pred=pred)
    ood.save_doc_thresholds(workdir, np.full(30, 0.9), scale=1.0, checkpoint_step=7)
    y_true, y_pred, names, kind = report.class_predictions(config, runfiles.load_predictions(workdir, "test"),
                                                           ood.load_doc_thresholds(workdir, 7))
    assert kind == "open intent, DOC" and names[-1] == "UNK"
    np.testing.assert_array_equal(y_pred, [0, 1, 1, 30])
    with open(report.write_report(workdir)) as f:
        md = f.read()
    assert "Confusion matrix, test (open intent, DOC;" in md and "(plots/confusion_test.png)" in md


# ------------------------------------------------------------------------------------ TensorBoard

def _events(workdir: str) -> list:
    """Every Event in the workdir's event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    out = []
    for name in sorted(n for n in os.listdir(workdir) if n.startswith("events.out.tfevents.")):
        with open(os.path.join(workdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            out.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + n]))
            pos += 12 + n + 4
    return out


def _scalars(events) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list] = {}
    for e in events:
        for v in e.summary.value:
            found.setdefault(v.tag, []).append((e.step, v.simple_value))
    return found


def test_training_writes_tensorboard_scalars(run):
    from mmfuse_jax.training.logging import read_metrics

    scalars = _scalars(_events(run["workdir"]))
    records = read_metrics(run["workdir"])
    dev = [(r["step"], r["acc"]) for r in records if r.get("split") == "dev"]
    assert [(s, pytest.approx(v)) for s, v in scalars["dev/acc"]] == dev
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    assert len(train) >= 2 and [(s, pytest.approx(v)) for s, v in scalars["train/train_loss"]] == train


def test_tensorboard_resume_purges_and_fresh_run_starts_clean(tmp_path):
    from tensorboardX.proto import event_pb2

    from mmfuse_jax.training.logging import MetricsWriter

    workdir = str(tmp_path)
    w = MetricsWriter(workdir)
    for step in range(1, 7):
        w.write({"step": step, "epoch": 1, "train_loss": 1.0 / step})
    w = MetricsWriter(workdir, resume_step=3)  # the run died after a checkpoint at step 3
    for step in (4, 5):
        w.write({"step": step, "epoch": 1, "train_loss": 2.0})
    w.write({"step": 5, "epoch": 1, "split": "dev", "acc": 0.5})
    events = _events(workdir)
    purge = [e for e in events if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
    assert [e.step for e in purge] == [4]  # TensorBoard drops the dead run's steps >= 4
    scalars = _scalars(events)
    assert scalars["train/train_loss"][-2:] == [(4, 2.0), (5, 2.0)] and scalars["dev/acc"] == [(5, 0.5)]
    MetricsWriter(workdir)  # a fresh run in the same folder: old events and lines are gone
    assert _scalars(_events(workdir)) == {} and not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


def test_the_command_redraws_the_report(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    config = {"model_name": "text_only", "preset": "mintrec", "dataset": {"name": "mintrec", "format": "mintrec"}}
    rng = np.random.default_rng(2)
    pred = {"logits": rng.normal(size=(9, 20)), "label": np.arange(9), "embedding": rng.normal(size=(9, 4))}
    workdir = _fake_run(tmp_path, config, {"acc": 0.5}, pred=pred)
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.report", f"--workdir={workdir}"], check=False, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("report.md")
    with open(os.path.join(workdir, "report.md")) as f:
        md = f.read()
    assert all(f"(plots/{n}_test.png)" in md for n in ("confusion", "per_class_f1", "embeddings"))
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.report", f"--workdir={tmp_path}/none"], check=False,
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "config.json expected the config a training run saves" in r.stderr
