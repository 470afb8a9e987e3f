"""DyKen-Hyena: ablation switches change the parameters they should, masks are respected."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models.test_models import BERT, C, Jitted, make_batch, model_config

from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError


def build(**overrides):
    cfg = model_config("dyken_hyena")
    for k, v in overrides.items():
        cfg[k] = v
    m = Jitted(registry.get("dyken_hyena").build(cfg, {"num_classes": C, "bert": BERT}))
    return m, m.init(jax.random.key(0), make_batch(), train=False)["params"]


def test_switches_shape_the_parameters():
    _, p = build()
    assert {"context", "kernel_generator", "hyena", "bert", "classifier"} <= set(p)
    gen_out = p["kernel_generator"]["kernels"]["kernel"]
    assert gen_out.shape[-1] == 3 * 3  # 3 groups (x0, x1, v) x kernel size 3
    _, p = build(dynamic_short_conv=False)
    assert "context" not in p and "kernel_generator" not in p
    _, p = build(long_conv=False)
    assert "filter" not in p["hyena"]
    _, p = build(kernel_size=5, cross_modal="audio")
    assert p["hyena"]["short_kernel"].shape == (3 * 12, 5)
    assert set(p["context"]) == {"audio_attention"}
    _, p = build(kernel_size=1, generator_depth=2)
    assert {"hidden_0", "hidden_1", "kernels"} == set(p["kernel_generator"])


@pytest.mark.parametrize("cross_modal,changes_with_video", [("audio", False), ("both", True)])
def test_cross_modal_switch_selects_the_streams(cross_modal, changes_with_video):
    m, p = build(cross_modal=cross_modal)
    b = make_batch()
    out = m.apply({"params": p}, b)["logits"]
    chex.assert_shape(out, (3, C))
    out_v = m.apply({"params": p}, dict(b, video=b["video"] * 3.0 + 1.0))["logits"]
    assert (not np.allclose(out, out_v, atol=1e-6)) == changes_with_video


def test_padded_frames_and_tokens_do_not_matter():
    m, p = build()
    b = make_batch()
    noisy = dict(b, audio=jnp.where(b["audio_mask"][..., None] > 0, b["audio"], 1e3),
                 video=jnp.where(b["video_mask"][..., None] > 0, b["video"], -1e3),
                 text_ids=jnp.where(b["text_mask"] > 0, b["text_ids"], 17))
    np.testing.assert_allclose(m.apply({"params": p}, b)["logits"], m.apply({"params": p}, noisy)["logits"],
                               atol=1e-5)


def test_kernels_differ_per_token():
    m, p = build()
    b = make_batch()
    _, state = m.module.apply({"params": p}, b, capture_intermediates=lambda mdl, _: mdl.name == "kernel_generator",
                              mutable=["intermediates"])
    kernels = state["intermediates"]["kernel_generator"]["__call__"][0]
    chex.assert_shape(kernels, (3, 7, 3, 3))
    assert float(jnp.std(kernels[0, :4], axis=0).mean()) > 0  # not one kernel for every token


def test_bad_switch_values_are_config_errors():
    with pytest.raises(ConfigError, match="cross_modal='text'"):
        build(cross_modal="text")
    with pytest.raises(ConfigError, match="kernel_groups=7 must divide"):
        build(kernel_groups=7)
