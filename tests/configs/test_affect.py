"""The MulT-family affect presets (configs/affect.py) build a dataset, metric and model per preset."""
from __future__ import annotations

import pytest
from mult_fixtures import load_config

from configs import affect
from mmfuse_jax import metrics


@pytest.mark.parametrize("model", ["mult", "hct_dmg"])
def test_every_config_preset_builds_its_dataset(model):
    for preset in affect.PRESETS:
        c = load_config(model, preset)
        assert c.dataset.metric in metrics.SCORERS and c.early_stop_metric in metrics.metric_names(c.dataset.metric)
        if preset not in ("demo", "tiny"):
            assert c.dataset.feat_dims.text == c.model.text_embed_dim and c.model.text_vocab_size == 0
    assert load_config(model, "mosei_aligned").dataset.max_len.to_dict() == {"text": 50, "audio": 50, "video": 50}
    assert load_config(model, "iemocap").dataset.label_shape == (4,)
