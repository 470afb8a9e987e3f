"""A run folder's identity: saved once, checked on resume/eval, accepted changes recorded."""
import json
import os

import ml_collections
import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import identity


def _config(hidden=16, epochs=3, lr=1e-3):
    return ml_collections.ConfigDict({"model_name": "early_fusion", "num_epochs": epochs, "patience": 2,
                                      "model": {"hidden": hidden}, "optimizer": {"lr": lr},
                                      "dataset": {"name": "synthetic_tiny"}})


def _snapshot(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def test_new_run_saves_config_and_fingerprint(tmp_path):
    fp = identity.record(str(tmp_path), _config())
    assert json.load(open(tmp_path / "config.json"))["model"]["hidden"] == 16
    assert json.load(open(tmp_path / "identity.json"))["fingerprint"] == fp == identity.fingerprint(_config())
    assert identity.check(str(tmp_path), _config()) == fp


def test_mismatch_names_keys_and_writes_nothing(tmp_path):
    identity.record(str(tmp_path), _config())
    before = _snapshot(tmp_path)
    for call in (identity.record, identity.check):
        with pytest.raises(ConfigError) as e:
            call(str(tmp_path), _config(hidden=32, lr=0.01))
        msg = str(e.value)
        assert "model.hidden=16, you asked for 32" in msg and "optimizer.lr=0.001, you asked for 0.01" in msg
        assert "new --workdir" in msg
    assert _snapshot(tmp_path) == before


def test_resumable_change_is_recorded_not_saved(tmp_path):
    fp = identity.record(str(tmp_path), _config())
    config_before = open(tmp_path / "config.json").read()
    assert identity.record(str(tmp_path), _config(epochs=9)) == fp
    assert open(tmp_path / "config.json").read() == config_before
    (line,) = open(tmp_path / "config_history.jsonl").read().splitlines()
    assert json.loads(line)["changed"] == {"num_epochs": {"saved": 3, "now": 9}}
    assert identity.fingerprint(_config(epochs=9)) == fp


def test_check_on_a_folder_without_run(tmp_path):
    with pytest.raises(ConfigError, match="not a run folder"):
        identity.check(str(tmp_path), _config())
    assert os.listdir(tmp_path) == []


def test_environment_is_recorded_and_a_changed_one_noted_on_resume(tmp_path, monkeypatch, capsys):
    identity.record(str(tmp_path), _config())
    env = json.load(open(tmp_path / "identity.json"))["environment"]
    assert env == identity.environment() and env["usable_cpus"] >= 1 and env["backend"] == "cpu"
    identity.record(str(tmp_path), _config())  # same environment: silent
    assert "note:" not in capsys.readouterr().err
    monkeypatch.setattr(identity, "environment", lambda: {**env, "usable_cpus": env["usable_cpus"] + 7})
    identity.record(str(tmp_path), _config())
    err = capsys.readouterr().err
    assert f"usable_cpus {env['usable_cpus']} -> {env['usable_cpus'] + 7}" in err and "bit for bit" in err
    assert json.load(open(tmp_path / "identity.json"))["environment"] == env  # the start is kept


def test_a_run_saved_before_the_synthetic_knobs_still_matches(tmp_path):
    old = _config()
    old.dataset.synthetic = {"generator": "mintrec", "train": 8}
    identity.record(str(tmp_path), old)
    new = _config()
    new.dataset.synthetic = {"generator": "mintrec", "train": 8, "incongruity": 0.0, "audio_noise": 0.0,
                             "video_noise": 0.0}
    identity.check(str(tmp_path), new)  # the knobs at 0 are what the old run's data were
    new.dataset.synthetic.incongruity = 0.3
    with pytest.raises(ConfigError, match="incongruity"):
        identity.check(str(tmp_path), new)


def _saved_without(model: str, drop: tuple[str, ...], tmp_path):
    """A run folder saved by an older version: today's tiny config without the ``drop`` fields."""
    from conftest import tiny_config

    saved = json.loads(tiny_config(model, str(tmp_path / "data")).to_json_best_effort())
    for key in drop:
        *path, leaf = key.split(".")
        target = saved
        for part in path:
            target = target[part]
        del target[leaf]
    workdir = tmp_path / model
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(saved))
    return str(workdir), tiny_config(model, str(tmp_path / "data"))


def test_runs_saved_before_later_fields_existed_still_match_where_their_behaviour_is_unchanged(tmp_path):
    workdir, config = _saved_without("dyken_hyena", ("model.fusion", "dataset.buckets"), tmp_path)
    identity.check(workdir, config)  # the old behaviour is today's default
    workdir, config = _saved_without("early_fusion", ("compiler_options",), tmp_path)
    identity.check(workdir, config)  # '' (JAX's defaults) is what every run before the field compiled with
    assert identity.stable_fingerprint(config) == identity.stable_fingerprint(
        json.loads(open(os.path.join(workdir, "config.json")).read()))
    config.compiler_options = "xla_backend_optimization_level=1"
    identity.check(workdir, config)  # resumable: how XLA compiles the steps, not the model
    workdir, config = _saved_without("mvcl_daf", ("model.coarse_view",), tmp_path)
    with pytest.raises(ConfigError, match="model.coarse_view='text_queried', you asked for 'per_modality'"):
        identity.check(workdir, config)  # the default changed: an old MVCL-DAF++ run is another model
    workdir, config = _saved_without("mult", ("optimizer.schedule", "optimizer.plateau"), tmp_path)
    with pytest.raises(ConfigError) as e:
        identity.check(workdir, config)
    assert "optimizer.schedule='linear', you asked for 'plateau'" in str(e.value) and "plateau." not in str(e.value)
    # optimizer.update: runs before it updated per leaf; the tiny presets now ask for 'grouped' (other rounding)
    workdir, config = _saved_without("text_only", ("optimizer.update",), tmp_path)
    with pytest.raises(ConfigError, match="optimizer.update='per_leaf', you asked for 'grouped'"):
        identity.check(workdir, config)
    config.optimizer.update = "per_leaf"
    identity.check(workdir, config)
