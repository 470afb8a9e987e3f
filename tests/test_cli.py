"""cli: the presets --help lists are each config file's ``PRESETS``, and every one of them builds."""
from __future__ import annotations

import importlib

import pytest

from mmfuse_jax import cli, registry


@pytest.mark.parametrize("model", registry.names())
def test_config_presets_are_the_files_presets_and_all_build(model):
    presets = cli.config_presets(model)
    if presets is None:
        pytest.skip(f"no configs/{model}.py")
    mod = importlib.import_module(f"configs.{model}")
    assert presets == list(mod.PRESETS) and len(presets) == len(set(presets)) > 0
    for preset in presets:
        c = mod.get_config(preset)
        assert c.model_name == model and c.preset == preset
    assert mod.get_config(None).preset in presets  # the default preset


def test_unknown_model_has_no_presets():
    assert cli.config_presets("no_such_model") is None
