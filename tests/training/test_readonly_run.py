"""eval.py into a run folder that cannot be written stops with one line before any work."""
import builtins
import os

import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import identity, loop
from tests.conftest import tiny_config


def test_eval_into_a_read_only_run_fails_first_and_changes_nothing(tmp_path, monkeypatch):
    config = tiny_config("early_fusion", str(tmp_path / "data"))
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    identity.record(workdir, config)  # a run folder (config.json, identity.json) and nothing else
    before = sorted(os.listdir(workdir))
    real_open = builtins.open

    def read_only_open(path, mode="r", *args, **kwargs):  # root ignores chmod, so refuse writes here
        if str(path).startswith(workdir) and any(c in mode for c in "wax+"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    with pytest.raises(ConfigError, match=r"run' is not writable: .*Permission denied"):
        loop.run_evaluation(config, workdir)
    assert sorted(os.listdir(workdir)) == before
