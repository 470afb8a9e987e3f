"""cli: the presets --help lists are each config file's ``PRESETS``, and every one of them builds."""
from __future__ import annotations

import importlib

import pytest

from mmfuse_jax import cli, registry

# Every packaged model has a configs/ file (a model registered by a test-local file has none).
WITH_CONFIGS = [m for m in registry.names() if cli.config_presets(m) is not None]


def test_every_packaged_model_has_a_config_file():
    import mmfuse_jax.models as models

    packaged = {name.rsplit(".", 1)[-1] for name in dir(models)} & set(registry.names())
    assert packaged and packaged <= set(WITH_CONFIGS), sorted(packaged - set(WITH_CONFIGS))


@pytest.mark.parametrize("model", WITH_CONFIGS)
def test_config_presets_are_the_files_presets_and_all_build(model):
    presets = cli.config_presets(model)
    mod = importlib.import_module(f"configs.{model}")
    assert presets == list(mod.PRESETS) and len(presets) == len(set(presets)) > 0
    for preset in presets:
        c = mod.get_config(preset)
        assert c.model_name == model and c.preset == preset
    assert mod.get_config(None).preset in presets  # the default preset


def test_unknown_model_has_no_presets():
    assert cli.config_presets("no_such_model") is None
