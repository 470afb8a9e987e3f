"""The analysis registry: every model's declared analyses exist, and a run gets its spec's analyses."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from mmfuse_jax import analysis, registry
from mmfuse_jax.errors import ConfigError


def test_every_registered_model_declares_known_analyses():
    for name in registry.names():
        assert all(a in analysis.ANALYSES for a in registry.get(name).analyses), name
        assert analysis.for_model(name) == [analysis.ANALYSES[a] for a in registry.get(name).analyses]
    assert registry.get("kuda").analyses == ("ratios",)
    assert "gates" in registry.get("hct_dmg").analyses
    classifiers = ("dyken_hyena", "mvcl_daf", "text_only", "mag_bert", "mult", "early_fusion", "hct_dmg")
    assert all("embeddings" in registry.get(n).analyses for n in classifiers)


def _preds(rng) -> dict:
    label = np.repeat(np.arange(3), 4)
    return {"test": {"logits": rng.normal(size=(12, 3)), "label": label, "embedding": rng.normal(size=(12, 4)),
                     "ratio": rng.dirichlet(np.ones(3), size=12), "prediction": rng.normal(size=12)}}


def test_run_all_dispatches_by_the_models_spec(tmp_path, monkeypatch):
    preds = _preds(np.random.default_rng(0))
    config = {"model_name": "text_only", "dataset": {"name": "mintrec", "format": "mintrec"}}
    drawn = analysis.run_all(str(tmp_path), config, preds, str(tmp_path))
    assert [os.path.basename(s.path) for s in drawn] == ["embeddings_test.png"]  # no ratios for text_only
    drawn = analysis.run_all(str(tmp_path), {**config, "model_name": "kuda"}, preds, str(tmp_path))
    assert [os.path.basename(s.path) for s in drawn] == ["ratios_test.png"] and "| text |" in drawn[0].markdown
    calls = []
    monkeypatch.setitem(analysis.ANALYSES, "probe", lambda *args: calls.append(args) or [])
    probe = dataclasses.replace(registry.get("text_only"), name="probe_model", analyses=("probe",))
    monkeypatch.setitem(registry._MODELS, "probe_model", probe)
    assert analysis.run_all("R", {"model_name": "probe_model"}, preds, "O") == []
    assert calls == [("R", {"model_name": "probe_model"}, preds, "O")]  # the one uniform signature


def test_unknown_names_fail_clearly(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown analysis 'nope': expected one of \['embeddings', 'gates'"):
        analysis.get("nope")
    bad = dataclasses.replace(registry.get("text_only"), name="bad_model", analyses=("nope",))
    monkeypatch.setitem(registry._MODELS, "bad_model", bad)
    with pytest.raises(ConfigError, match="unknown analysis 'nope'"):
        analysis.run_all("R", {"model_name": "bad_model"}, {}, "O")
