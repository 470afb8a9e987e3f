"""DyKen-Hyena: each switch changes the parameters and the inputs it should, and nothing else."""
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


def param_shapes(**overrides):
    """The parameters' shapes at a setting: the init traced (`jax.eval_shape`), not compiled or run."""
    cfg = model_config("dyken_hyena")
    for k, v in overrides.items():
        cfg[k] = v
    module = registry.get("dyken_hyena").build(cfg, {"num_classes": C, "bert": BERT})
    return jax.eval_shape(lambda key: module.init(key, make_batch(), train=False), jax.random.key(0))["params"]


def logits(m, p, b):
    return np.asarray(m.apply({"params": p}, b)["logits"])


def other_audio_video(b):
    """The same text with different audio and video (values and lengths)."""
    return dict(b, audio=b["audio"] * 3.0 + 1.0, video=-b["video"], audio_mask=jnp.ones_like(b["audio_mask"]),
                video_mask=jnp.ones_like(b["video_mask"]))


def test_switches_shape_the_parameters():
    p = param_shapes(align="ctc")  # paper defaults (context, generated kernels replace the static ones); CTC
    assert {"context", "kernel_generator", "hyena", "bert", "classifier"} <= set(p)
    assert "short_kernel" not in p["hyena"] and "context_fusion" not in p
    assert set(p["context"]) == {"audio_align", "video_align", "audio_attention", "video_attention"}
    gen = p["kernel_generator"]
    assert gen["kernels"]["kernel"].shape[-1] == 3 * 3 and gen["bias"].shape == (3, 3)  # 3 groups x K = 3
    p = param_shapes(dynamic_short_conv=False)
    assert "kernel_generator" not in p and {"context", "context_fusion"} <= set(p)
    assert p["hyena"]["short_kernel"].shape == (3 * 12, 3)
    p = param_shapes(use_context=False)
    assert "context" not in p and "context_fusion" not in p and "kernel_generator" in p
    p = param_shapes(long_conv=False)  # default align: interpolate
    assert "filter" not in p["hyena"]
    assert set(p["context"]) == {"audio_attention", "video_attention"}  # parameter-free alignment
    p = param_shapes(kernel_size=5, cross_modal="audio", dynamic_kernels="add", align="none")
    assert p["hyena"]["short_kernel"].shape == (3 * 12, 5)
    assert set(p["context"]) == {"audio_attention"}
    p = param_shapes(kernel_size=1, generator_depth=2, kernel_granularity="channel", kernel_rank=4)
    assert {"hidden_0", "hidden_1", "coefficients", "basis", "bias"} == set(p["kernel_generator"])
    chex.assert_shape((p["kernel_generator"]["basis"], p["kernel_generator"]["bias"]), ((4, 36, 1), (36, 1)))


@pytest.mark.parametrize("use_context,dynamic,uses_audio_video", [
    (True, True, True),     # the paper: audio/video -> context -> kernels
    (True, False, True),    # static kernels; the context still enters by addition (context_fusion)
    (False, True, False),   # kernels generated from the text alone
    (False, False, False),  # plain Hyena + BERT on the text
])
def test_use_context_and_dynamic_short_conv_are_separate(use_context, dynamic, uses_audio_video):
    m, p = build(use_context=use_context, dynamic_short_conv=dynamic)
    b = make_batch()
    out = logits(m, p, b)
    chex.assert_shape(out, (3, C))
    assert (not np.allclose(out, logits(m, p, other_audio_video(b)), atol=1e-6)) == uses_audio_video
    if use_context and not dynamic:  # ... and the addition is the only remaining path
        p0 = dict(p, context_fusion=jax.tree.map(jnp.zeros_like, p["context_fusion"]))
        np.testing.assert_allclose(logits(m, p0, b), logits(m, p0, other_audio_video(b)), atol=1e-6)


def test_replace_ignores_static_kernels_and_add_is_static_plus_generated():
    m_add, p_add = build(dynamic_kernels="add")
    m_rep, _ = build(dynamic_kernels="replace")
    b = make_batch()
    hyena = p_add["hyena"]
    zero_static = dict(p_add, hyena=dict(hyena, short_kernel=jnp.zeros_like(hyena["short_kernel"])))
    without_static = dict(p_add, hyena={k: v for k, v in hyena.items() if k != "short_kernel"})
    # add with static = 0 is replace with the same generator; a nonzero static kernel changes add only.
    np.testing.assert_allclose(logits(m_add, zero_static, b), logits(m_rep, without_static, b), atol=1e-5)
    assert not np.allclose(logits(m_add, p_add, b), logits(m_rep, without_static, b), atol=1e-5)


def _kernels(m, p, b):
    @jax.jit  # one program (op by op: ~130)
    def run(p, b):
        return m.module.apply({"params": p}, b, mutable=["intermediates"],
                              capture_intermediates=lambda mdl, _: mdl.name == "kernel_generator")[1]
    return run(p, b)["intermediates"]["kernel_generator"]["__call__"][0]


@pytest.mark.parametrize("granularity,channels", [("groups", 3), ("channel", 36)])
def test_kernels_differ_per_token_and_channel(granularity, channels):
    m, p = build(kernel_granularity=granularity)
    kernels = _kernels(m, p, make_batch())
    chex.assert_shape(kernels, (3, 7, channels, 3))
    assert float(jnp.std(kernels[0, :4], axis=0).mean()) > 0  # not one kernel for every token
    if granularity == "channel":  # one kernel per channel, not per group of channels
        assert float(jnp.std(kernels[0, :4, :12], axis=1).mean()) > 0


@pytest.mark.parametrize("align", ["none", "ctc", "interpolate"])
def test_padded_frames_and_tokens_do_not_matter(align):
    m, p = build(align=align)
    b = make_batch()
    noisy = dict(b, audio=jnp.where(b["audio_mask"][..., None] > 0, b["audio"], 1e3),
                 video=jnp.where(b["video_mask"][..., None] > 0, b["video"], -1e3),
                 text_ids=jnp.where(b["text_mask"] > 0, b["text_ids"], 17))
    np.testing.assert_allclose(logits(m, p, b), logits(m, p, noisy), atol=1e-5)


def test_alignment_makes_the_frame_order_matter():
    m_none, p = build(align="none")
    m_interp, _ = build(align="interpolate")  # the same parameters: interpolation has none
    b = make_batch()
    rev = dict(b, audio=jnp.stack([jnp.concatenate([b["audio"][i, :n][::-1], b["audio"][i, n:]])
                                   for i, n in enumerate(np.asarray(b["audio_mask"]).sum(1))]))
    assert not np.allclose(logits(m_none, p, b), logits(m_interp, p, b), atol=1e-5)
    # Unaligned, the text attends to a set of frames (no frame positions): reversing them is invisible.
    np.testing.assert_allclose(logits(m_none, p, b), logits(m_none, p, rev), atol=1e-5)
    # Aligned, token i reads the frames at its relative time, so the order changes the output.
    assert not np.allclose(logits(m_interp, p, b), logits(m_interp, p, rev), atol=1e-5)


def test_cross_modal_switch_selects_the_streams():
    m, p = build(cross_modal="audio")
    b = make_batch()
    np.testing.assert_allclose(logits(m, p, b), logits(m, p, dict(b, video=b["video"] * 3.0 + 1.0)), atol=1e-6)


def test_bad_switch_values_are_config_errors():
    for overrides, message in (({"cross_modal": "text"}, "cross_modal='text'"),
                               ({"kernel_groups": 7}, "kernel_groups=7 must divide"),
                               ({"dynamic_kernels": "sum"}, "dynamic_kernels='sum'"),
                               ({"kernel_granularity": "token"}, "kernel_granularity='token'"),
                               ({"align": "dtw"}, "align='dtw'"),
                               ({"align": "ctc", "text_len": 5}, "text_len=5 is shorter")):
        with pytest.raises(ConfigError, match=message):
            build(**overrides)
