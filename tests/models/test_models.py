"""Every registered model: output shapes, finiteness, gradients reach every parameter, modality use."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmfuse_jax import registry
from mmfuse_jax.encoders.bert import BertConfig

B, LT, LA, LV, DA, DV, C = 3, 7, 11, 5, 9, 6, 5
BERT = BertConfig(vocab_size=31, hidden_size=12, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=20, max_position_embeddings=16)


def model_config(name):
    return tiny_config(name).model


def tiny_config(name):
    """The ``tiny`` preset of configs/<name>.py (what make_loss reads its hyperparameters from)."""
    import importlib.util
    import os

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(REPO, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("tiny")


def make_batch(seed=0, *, audio_missing=False):
    rng = np.random.default_rng(seed)
    text_len = np.array([7, 4, 2])
    mask = (np.arange(LT)[None] < text_len[:, None]).astype(np.int32)
    batch = {"text_ids": (rng.integers(5, 31, (B, LT)) * mask).astype(np.int32), "text_mask": mask,
             "text_type_ids": np.zeros((B, LT), np.int32),
             "audio": rng.standard_normal((B, LA, DA)).astype(np.float32),
             "audio_mask": (np.arange(LA)[None] < np.array([[11], [6], [1]])).astype(np.int32),
             "video": rng.standard_normal((B, LV, DV)).astype(np.float32),
             "video_mask": (np.arange(LV)[None] < np.array([[5], [2], [3]])).astype(np.int32),
             "label": np.array([0, 3, 4], np.int32), "valid": np.array([1, 1, 0], np.float32)}
    if audio_missing:
        batch["audio"], batch["audio_mask"] = np.zeros_like(batch["audio"]), np.zeros_like(batch["audio_mask"])
    return {k: jnp.asarray(v) for k, v in batch.items()}


class Jitted:
    """The module with jitted init/apply (op-by-op dispatch makes un-jitted tests slow)."""

    def __init__(self, module):
        self.module = module
        self.init = jax.jit(module.init, static_argnames="train")
        self.apply = jax.jit(module.apply, static_argnames="train")


def fit_adam(loss, params, lr: float, steps: int):
    """``steps`` Adam steps on ``loss(params)``, each one jitted program (the update applied leaf by leaf,
    op by op, would compile ~100): the first step's loss and gradients, and the last step's loss."""
    tx = optax.adam(lr)

    @jax.jit
    def step(p, opt):
        value, g = jax.value_and_grad(loss)(p)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, value, g

    params, opt, first, grads = step(params, jax.jit(tx.init)(params))
    last = first
    for _ in range(steps - 1):
        params, opt, last, _ = step(params, opt)
    return first, grads, last


def build(name):
    spec = registry.get(name)
    m = Jitted(spec.build(model_config(name), {"num_classes": C, "bert": BERT}))
    return spec, m, m.init(jax.random.key(0), make_batch(), train=False)["params"]


@pytest.fixture(params=registry.names(), scope="module")
def model(request):
    return build(request.param)


def test_output_shapes_and_finite(model):
    spec, m, params = model
    out = m.apply({"params": params}, make_batch(), train=False)
    if spec.task == "regression":  # regressors (kuda) predict one value per example
        chex.assert_shape(out["prediction"], (B,))
    else:
        chex.assert_shape(out["logits"], (B, C))
    assert out["embedding"].shape[0] == B
    chex.assert_tree_all_finite(out)
    out_missing = m.apply({"params": params}, make_batch(audio_missing=True), train=False)
    chex.assert_tree_all_finite(out_missing)


def test_init_in_pieces_equals_the_jitted_init(model):
    """`training.init_pieces` (how `experiment.init_params` runs every model's init) gives the jitted
    init's parameters bit for bit, BERT included (its normal(0.02) draws are where a piece compiled
    apart from its scale would differ)."""
    from mmfuse_jax.training import init_pieces

    _, m, params = model
    key, batch = jax.random.key(0), make_batch()
    pieces = init_pieces.call(lambda k, b: m.module.init(k, b, train=False)["params"], key, batch)
    differ = [jax.tree_util.keystr(p) for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                                                          jax.tree_util.tree_leaves(pieces))
              if not np.array_equal(np.asarray(a), np.asarray(b))]
    assert jax.tree_util.tree_structure(pieces) == jax.tree_util.tree_structure(params) and not differ, differ


def test_gradients_reach_every_parameter(model):
    spec, m, params = model

    def loss(p):
        out = m.apply({"params": p}, make_batch(), train=True, rngs={"dropout": jax.random.key(1)})
        return spec.make_loss(tiny_config(spec.name))(out, make_batch())[0]

    grads = jax.jit(jax.grad(loss))(params)
    zero = [jax.tree_util.keystr(path) for path, g in jax.tree_util.tree_leaves_with_path(grads)
            if not np.any(np.asarray(g))]
    # The pooler/type embeddings of unused rows may legitimately get zero gradient only if unused.
    zero = [z for z in zero if "token_type_embeddings" not in z]
    assert not zero, f"parameters with zero gradient: {zero}"


def test_padding_rows_do_not_change_the_loss(model):
    spec, m, params = model
    b = make_batch()
    out = m.apply({"params": params}, b, train=False)
    loss = spec.make_loss(tiny_config(spec.name))(out, b)[0]
    b2 = dict(b, label=b["label"].at[2].set(1))  # change only the invalid row's label
    assert float(spec.make_loss(tiny_config(spec.name))(out, b2)[0]) == pytest.approx(float(loss))


def test_text_only_ignores_audio_and_video_fusion_uses_them():
    for name, uses in (("text_only", False), ("early_fusion", True)):
        spec, m, params = build(name)
        a = m.apply({"params": params}, make_batch(0), train=False)["logits"]
        b = make_batch(0)
        b = dict(b, audio=b["audio"] + 1.0, video=b["video"] * 2.0)
        changed = not np.allclose(a, m.apply({"params": params}, b, train=False)["logits"])
        assert changed == uses, name


def test_masked_frames_do_not_matter():
    spec, m, params = build("early_fusion")
    b = make_batch()
    noisy = dict(b, audio=jnp.where(b["audio_mask"][..., None] > 0, b["audio"], 1e3))
    np.testing.assert_allclose(m.apply({"params": params}, b)["logits"],
                               m.apply({"params": params}, noisy)["logits"], atol=1e-5)


def test_unknown_model_lists_the_valid_names():
    from mmfuse_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model 'nope': expected one of .*early_fusion.*text_only"):
        registry.get("nope")


def test_model_config_is_a_configdict():
    assert isinstance(model_config("early_fusion"), ml_collections.ConfigDict)
