"""End to end on the synthetic benchmark: learning and the CLI (kill-and-resume: test_kill_resume.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import LONG_RUN, REPO, synthetic_copy, synthetic_dataset, tiny_config

from mmfuse_jax.training import loop
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.experiment import build
from mmfuse_jax.training.logging import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The tiny preset's benchmark (320 train examples), generated once for this module."""
    from mmfuse_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("e2e") / "bench")
    return synthetic_copy(root, "mintrec", synthetic.SyntheticSpec(train=320, dev=96, test=96))


def _train_and_evaluate(name: str, bench: str, workdir: str, **overrides) -> dict:
    """Train and evaluate the tiny preset of ``name``: the test results (checking what every run leaves)."""
    config = tiny_config(name, bench, **LONG_RUN, **overrides)
    summary = loop.train_and_evaluate(config, workdir)
    assert summary["compiles"] <= config.dataset.num_buckets  # one per length bucket
    results = loop.evaluate(config, workdir).results
    # The evaluation reused the training loop's eval step (`step_lib.memo`): one jitted function for the
    # model, traced once per length bucket across the loop's dev evaluations and the final dev/test.
    model = build(config, data=False).model
    kept = [fn for key, fn in step_lib.memo_items() if key[0] == "eval_step" and key[1] == model]
    assert len(kept) == 1 and kept[0]._cache_size() <= config.dataset.num_buckets, kept
    assert os.path.exists(os.path.join(workdir, "eval_test.json"))
    assert os.listdir(os.path.join(workdir, "best")) and os.listdir(os.path.join(workdir, "checkpoints"))
    records = read_metrics(workdir)
    train = [r["train_loss"] for r in records if "train_loss" in r]
    assert train[-1] < train[0]  # the loss falls
    return results


@pytest.fixture(scope="module")
def text_only(bench, tmp_path_factory):
    """The text_only baseline every fusion model here is compared with, trained once for the module."""
    return _train_and_evaluate("text_only", bench, str(tmp_path_factory.mktemp("text_only")))


def test_fusion_beats_text_only(bench, text_only, tmp_path):
    results = {"text_only": text_only, "early_fusion": _train_and_evaluate("early_fusion", bench, str(tmp_path))}
    text = results["text_only"]["test"]["acc"]
    assert text <= 0.7, results  # text alone cannot tell the two intents of a pair apart
    assert results["early_fusion"]["test"]["acc"] >= 0.85, results
    assert results["early_fusion"]["test"]["acc"] - text >= 0.2, results


def test_dyken_hyena_beats_text_only(bench, tmp_path_factory):
    """DyKen-Hyena needs more examples than the tiny set: the demo-sized benchmark, 8 epochs."""
    from mmfuse_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("e2e_dyken") / "bench")
    synthetic_copy(root, "mintrec", synthetic.SyntheticSpec(train=800, dev=96, test=96))
    workdir = str(tmp_path_factory.mktemp("dyken_run"))
    config = tiny_config("dyken_hyena", root, **LONG_RUN, **{"optimizer.lr": 1e-3, "num_epochs": 8})
    loop.train_and_evaluate(config, workdir)
    dyken = loop.evaluate(config, workdir).results["test"]["acc"]
    # Text alone cannot separate the two intents of a pair (tests/data/test_synthetic.py shows both use
    # the same words), so text_only tops out near 0.5 here, as test_fusion_beats_text_only measures.
    assert dyken >= 0.85, dyken


def test_open_intent_on_the_synthetic_mintrec2_variant(tmp_path):
    """dyken_hyena with outlier exposure detects intents never seen in training (DOC at test)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg_dyken", os.path.join(REPO, "configs", "dyken_hyena.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config("tiny_mintrec2")
    config.dataset.root = str(tmp_path / "bench2")
    config.dataset.bert_path = str(tmp_path / "bench2" / "bert")
    config.compiler_options, config.mesh.devices = LONG_RUN["compiler_options"], LONG_RUN["mesh.devices"]
    synthetic_dataset(config.dataset)
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config, workdir)
    res = loop.evaluate(config, workdir).results
    with open(os.path.join(workdir, "eval_test.json")) as f:
        record = json.load(f)
    assert record["open_intent"] == res["test (open intent)"]
    assert res["test"]["acc"] >= 0.8, res
    assert res["test (open intent)"]["f1_oos"] >= 0.3, res


def _cli(script, *args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_user_errors_are_one_clear_line(bench, tmp_path):
    r = _cli("train.py", f"--config={REPO}/configs/early_fusion.py:nope", f"--workdir={tmp_path}/w")
    assert r.returncode != 0 and "unknown preset 'nope'" in r.stderr and "demo" in r.stderr
    r = _cli("train.py", f"--config={REPO}/configs/early_fusion.py:tiny", f"--workdir={tmp_path}/w",
             f"--config.dataset.root={tmp_path}/missing", "--config.dataset.synthetic={}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "missing" in r.stderr and "Traceback" not in r.stderr
    r = _cli("eval.py", f"--config={REPO}/configs/early_fusion.py:tiny", f"--workdir={tmp_path}/empty",
             f"--config.dataset.root={bench}", f"--config.dataset.bert_path={bench}/bert")
    assert r.returncode == 2 and "not a run folder" in r.stderr and "Traceback" not in r.stderr


def test_bfloat16_compute_still_learns(bench, tmp_path):
    config = tiny_config("early_fusion", bench, compute_dtype="bfloat16", **LONG_RUN, **{"dataset.num_buckets": 1})
    workdir = str(tmp_path / "bf16")
    loop.train_and_evaluate(config, workdir)
    res = loop.evaluate(config, workdir).results
    assert res["test"]["acc"] >= 0.85, res


def test_mvcl_daf_beats_text_only(bench, text_only, tmp_path):
    """MVCL-DAF++ (coarse-to-fine fusion + prototype and multi-view losses) on the tiny benchmark."""
    # One compile (one bucket) and no dropout outside BERT: MVCL-DAF++'s own layers draw their masks with
    # threefry, a quarter of its tiny step on CPU (the step profile, 2026-12-06); test call 39.6 -> 33.9 s,
    # dev acc at epoch 12 0.875 -> 0.979 (test acc below). Its dropout path: tests/models/test_mvcl_daf.py.
    mvcl = _train_and_evaluate("mvcl_daf", bench, str(tmp_path), **{"dataset.num_buckets": 1, "model.dropout": 0.0})
    results = {"text_only": text_only, "mvcl_daf": mvcl}
    text, mvcl = results["text_only"]["test"]["acc"], results["mvcl_daf"]["test"]["acc"]
    # Measured with the paper's coarse view (model.coarse_view='per_modality', the default since the
    # fidelity work): test acc 0.823 vs text_only 0.635 with XLA's default CPU emitters, 0.771 (5 of 96
    # examples fewer) under the suite's compile-speed flags (conftest), and 0.823 vs text_only 0.469 with
    # the tiny preset's hashed BERT dropout masks and LONG_RUN's level 1 (2026-12-05), 0.8125 vs 0.469 with
    # the tiny preset's grouped AdamW update on one device, 1.0 with no dropout outside BERT (both
    # 2026-12-06) - any change of masks or float rounding moves it. The bound is the claim (clearly
    # above text alone), with room for that spread.
    assert mvcl >= 0.75 and mvcl - text >= 0.1, results
