"""Predictor: same outputs as eval.py for the same examples, masking, DOC, input checks.

`trained_run` (also used by test_report, test_compare, test_cli_ux) trains and evaluates one tiny
run once per test session, shared across pytest-xdist workers through a file lock: early_fusion
on a small synthetic MIntRec2.0 variant, so the open-intent (DOC) path is covered too.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import types

import numpy as np
import pytest
from conftest import tiny_config

from mmfuse_jax import registry
from mmfuse_jax.errors import DataError

_SPEC = {"train": 120, "dev": 30, "test": 30, "oos_train": 24, "oos_dev": 10, "oos_test": 15, "audio_dim": 6,
         "video_dim": 5, "audio_len": (6, 20), "video_len": (4, 12), "bert_hidden": 24, "bert_heads": 2,
         "bert_layers": 1}


def _shared_root(tmp_path_factory) -> str:
    # pytest-xdist: every worker's basetemp sits in one session folder; without xdist, our own.
    base = tmp_path_factory.getbasetemp()
    return str(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)


def run_config(root: str):
    """early_fusion (tiny optimisation) on the synthetic MIntRec2.0 variant written under ``root``."""
    from configs import datasets

    c = tiny_config("early_fusion", root, num_epochs=2, log_every=2)
    ds = datasets.dataset("synthetic_mintrec2_tiny")
    ds.root, ds.bert_path, ds.synthetic = root, os.path.join(root, "bert"), {}
    ds.feat_dims = {"audio": _SPEC["audio_dim"], "video": _SPEC["video_dim"]}
    ds.max_len = {"text": 16, "audio": _SPEC["audio_len"][1], "video": _SPEC["video_len"][1]}
    ds.read_options.oos_splits = ("train", "dev", "test")  # outlier exposure, as the dyken preset
    ds.num_buckets = 1  # one train and one eval compilation: the fixture's time is mostly compiling
    c.dataset = ds
    return c


def trained_run(tmp_path_factory) -> dict:
    """{'workdir', 'root', 'config'} of the shared run (trained and evaluated on first use)."""
    from mmfuse_jax import report
    from mmfuse_jax.data.synthetic import mintrec2 as synthetic_mintrec2
    from mmfuse_jax.training import loop

    shared = os.path.join(_shared_root(tmp_path_factory), "ux_shared_run")
    os.makedirs(shared, exist_ok=True)
    root, workdir = os.path.join(shared, "bench"), os.path.join(shared, "run")
    with open(os.path.join(shared, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(shared, "done")):
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
            synthetic_mintrec2.write(root, synthetic_mintrec2.Mintrec2Spec(**_SPEC))
            config = run_config(root)
            loop.train_and_evaluate(config, workdir)
            ev = loop.evaluate(config, workdir)
            report.after_evaluate(ev.run_dir, ev.config, ev.preds, train=ev.train, checkpoint_step=ev.checkpoint_step)
            open(os.path.join(shared, "done"), "w").close()
    return {"workdir": workdir, "root": root, "config": run_config(root)}


def raw_split(run: dict, split: str) -> list[dict]:
    """The split's examples as the reader returns them (text, audio, video, label), in eval order."""
    from mmfuse_jax.data.formats import FORMATS

    ds = run["config"].dataset
    splits, _ = FORMATS[ds.format].read(ds.root, feat_dims=dict(ds.feat_dims), max_lens=dict(ds.max_len),
                                        nonfinite=ds.nonfinite, **dict(ds.read_options))
    return splits[split]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run):
    from mmfuse_jax import Predictor

    return Predictor.from_workdir(run["workdir"])


def test_predictions_equal_eval_for_the_same_examples(run, predictor):
    from mmfuse_jax import ood

    test = raw_split(run, "test")
    with np.load(os.path.join(run["workdir"], "predictions_test.npz")) as z:
        logits, labels = z["logits"], z["label"]
    assert [r["label"] for r in test] == labels.tolist()  # the same rows, in the same order
    examples = [{"text": r["text"], "audio": r["audio"], "video": r["video"], "id": i} for i, r in enumerate(test)]
    outs, _ = predictor.outputs(examples)
    np.testing.assert_allclose(outs["logits"], logits, atol=1e-5)
    results = predictor.predict_batch(examples)
    assert [r["id"] for r in results] == list(range(len(test)))
    # DOC decisions with the thresholds eval.py saved give eval.py's open-intent accuracy.
    names = predictor.labels + [predictor.oos_name]
    doc = ood.doc_predict(logits, predictor.doc_thresholds, len(predictor.labels))
    assert [r["label"] for r in results] == [names[i] for i in doc]
    with open(os.path.join(run["workdir"], "eval_test.json")) as f:
        open_acc = json.load(f)["open_intent"]["acc"]
    assert np.mean([names[y] == r["label"] for y, r in zip(labels, results)]) == pytest.approx(open_acc)
    for r, row in zip(results, logits):
        assert r["in_scope_label"] == names[int(row.argmax())]
        assert r["out_of_scope"] == (r["label"] == "UNK")
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert r["missing_modalities"] == [] and r["truncated"] == []
    # Every call pads to one shape: one compilation for all of the above and for a single example.
    predictor.predict(test[0]["text"], audio=test[0]["audio"][:3])
    assert predictor.counter.count == 1


def test_missing_modalities_are_masked_and_stated(run, predictor):
    ex = raw_split(run, "dev")[0]
    alone = predictor.predict(ex["text"])
    assert alone["missing_modalities"] == ["audio", "video"]
    with_audio = predictor.predict(ex["text"], audio=ex["audio"])
    assert with_audio["missing_modalities"] == ["video"]
    # Missing = zeros with an all-zero mask (the Batch contract), in the same compiled call.
    outs, _ = predictor.outputs([{"text": ex["text"]}, {"text": ex["text"], "audio": ex["audio"]}])
    assert np.all(np.isfinite(outs["logits"]))
    assert not np.allclose(outs["logits"][0], outs["logits"][1])  # the audio is used when given
    long_audio = np.concatenate([ex["audio"]] * 10)
    assert predictor.predict(ex["text"], audio=long_audio)["truncated"] == ["audio"]


def test_bad_inputs_name_the_input(predictor, tmp_path):
    text = "hello there"
    cases = [
        ({"audio": np.zeros((5, 7), np.float32)}, ["audio", "features [T, 6]", "[5, 7]"]),
        ({"video": np.full((3, 5), np.nan, np.float32)}, ["video", "finite", "15 NaN or inf"]),
        ({"audio": np.zeros((4,), np.float32)}, ["audio", "shape [4]"]),
        ({"audio": np.array([["a"] * 6])}, ["audio", "real-valued", "dtype <U1"]),
        ({"audio": str(tmp_path / "none.npy")}, ["none.npy", "audio", "no such file"]),
    ]
    for kwargs, words in cases:
        with pytest.raises(DataError) as e:
            predictor.predict(text, **kwargs)
        for w in words:
            assert w in str(e.value), (w, str(e.value))
    with pytest.raises(DataError, match="input #2: text expected a string"):
        predictor.predict_batch([{"text": text}, {"text": 3}])
    with pytest.raises(DataError, match="unknown keys"):
        predictor.predict_batch([{"text": text, "audoi": "a.npy"}])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="no pickled objects"):
        predictor.predict(text, video=str(tmp_path / "obj.npy"))


def test_doc_thresholds_are_fitted_when_eval_saved_none(run, predictor, tmp_path):
    from mmfuse_jax import Predictor

    copy = str(tmp_path / "run")
    shutil.copytree(run["workdir"], copy)
    os.remove(os.path.join(copy, "doc_thresholds.json"))
    fitted = Predictor.from_workdir(copy)
    np.testing.assert_allclose(fitted.doc_thresholds, predictor.doc_thresholds, rtol=1e-6)
    assert os.path.exists(os.path.join(copy, "doc_thresholds.json"))  # saved for the next load


def test_a_specs_declared_outputs_come_back_labelled():
    """Whatever extra outputs a spec declares are returned, under its result keys, with its labels."""
    from mmfuse_jax.predictor import Predictor

    p = Predictor.__new__(Predictor)
    p.labels, p.doc_thresholds, p.oos_name = ["a", "b"], None, None
    p.exp = types.SimpleNamespace(spec=registry.ModelSpec(
        "any", None, None, eval_outputs=("ratio", "unimodal", "extra"),
        output_labels={"ratio": ("text", "video", "audio"), "unimodal": ("text", "video", "audio")},
        result_keys={"ratio": "modality_weights"}))
    out = {"prediction": np.float32(0.5), "ratio": np.array([0.5, 0.25, 0.25]), "unimodal": np.array([1.0, 2.0, 3.0]),
           "embedding": np.zeros(4)}
    assert p._decide(out) == {"score": 0.5, "modality_weights": {"text": 0.5, "video": 0.25, "audio": 0.25},
                              "unimodal": {"text": 1.0, "video": 2.0, "audio": 3.0}}  # 'extra' not emitted
    res = p._decide({"logits": np.array([0.0, 1.0]), "extra": np.array([7.0, 8.0])})
    assert res["label"] == "b" and res["extra"] == [7.0, 8.0]


def test_regression_and_per_class_outputs():
    """The task decides the output: a score, or one binary decision per class (IEMOCAP)."""
    from mmfuse_jax.predictor import Predictor

    p = Predictor.__new__(Predictor)
    p.labels, p.doc_thresholds, p.oos_name = ["Neutral", "Happy", "Sad", "Angry"], None, None
    p.exp = types.SimpleNamespace(spec=registry.ModelSpec("any", None, None))
    assert p._decide({"prediction": np.float32(-1.25)}) == {"score": -1.25}
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.5]])
    res = p._decide({"logits": logits})
    assert res["labels"] == ["Happy", "Sad"]
    assert res["probabilities"]["Sad"] == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_not_a_run_folder(tmp_path):
    from mmfuse_jax import Predictor
    from mmfuse_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="not a run folder"):
        Predictor.from_workdir(str(tmp_path))
