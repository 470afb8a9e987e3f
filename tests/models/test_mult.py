"""`mult`: shapes on every dataset preset, the official architecture's parameter count, masks,
learning on a synthetic emotion set, bad configurations."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from mult_fixtures import feature_batch, load_config, mult_split, split_batch

from mmfuse_jax import losses, registry
from mmfuse_jax.data.formats import FORMATS
from mmfuse_jax.models._affect import count_parameters
from mmfuse_jax.training import init_pieces

PRESETS = ("mosi", "mosei", "iemocap", "iemocap_aligned", "urfunny", "mustard")


def build(model: str, preset: str, **overrides):
    c = load_config(model, preset)
    c.model.update(overrides)
    return registry.get(model).build(c.model, {"num_classes": len(FORMATS[c.dataset.format].LABELS)}), c


def expected_outputs(c, b=3):
    if c.model.output == "regression":
        return {"prediction": (b,)}
    if c.model.output == "emotion":
        return {"logits": (b, 4, 2)}
    return {"logits": (b, 2)}


@pytest.mark.parametrize("model", ["mult", "hct_dmg"])
@pytest.mark.parametrize("preset", PRESETS)
def test_shapes_on_every_dataset_preset(model, preset):
    m, c = build(model, preset, num_layers=1, mem_layers=1)  # depth does not change any shape
    batch = feature_batch(c.dataset)

    def run():  # one trace: the training forward pass that creates the params
        out, _ = m.init_with_output({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch, train=True)
        return out, registry.get(model).make_loss(None)(out, batch)[0]

    out, loss = jax.eval_shape(run)  # traced, not compiled: the presets' real sizes stay cheap
    for key, shape in expected_outputs(c).items():
        chex.assert_shape(out[key], shape)
    chex.assert_shape(out["embedding"], (3, (6 if model == "mult" else 2) * c.model.dim))
    assert loss.shape == ()


def official_mult_count(dims, d, layers, kernels, out_dim):
    """Parameters of the official MULTModel (src/models.py) with d_l = d_a = d_v = d, counted by hand."""
    def encoder(e, n):  # TransformerEncoderLayer x n (in_proj, out_proj, fc1, fc2, 2 LayerNorms) + final LN
        return n * ((3 * e * e + 3 * e) + (e * e + e) + (4 * e * e + 4 * e) + (4 * e * e + e) + 4 * e) + 2 * e
    proj = sum(dm * d * k for dm, k in zip(dims, kernels) if dm != d)        # Conv1d, bias=False
    combined = 6 * d
    head = 2 * (combined * combined + combined) + combined * out_dim + out_dim
    return proj + 6 * encoder(d, layers) + 3 * encoder(2 * d, max(layers, 3)) + head


@pytest.mark.parametrize("preset,out_dim", [("mosei", 1), ("iemocap", 8)])
def test_parameter_count_equals_the_official_architecture(preset, out_dim):
    m, c = build("mult", preset)
    dims = tuple(c.dataset.feat_dims[k] for k in ("text", "audio", "video"))
    want = official_mult_count(dims, c.model.dim, c.model.num_layers, c.model.conv_kernel, out_dim)
    assert count_parameters(m, feature_batch(c.dataset)) == want


def test_official_code_sizes_and_partial_modes():
    # src/models.py hard-codes d = 30 and kernel 1; main.py defaults 5 layers x 5 heads.
    m, c = build("mult", "mosi", dim=30, num_layers=5, num_heads=5, conv_kernel=(1, 1, 1))
    assert count_parameters(m, feature_batch(c.dataset)) == official_mult_count((300, 5, 20), 30, 5, (1, 1, 1), 1)
    m, c = build("mult", "mosi", targets=("text",))  # --lonly: combined_dim = 2 d
    out = jax.eval_shape(lambda: m.apply(m.init(jax.random.key(0), feature_batch(c.dataset)),
                                         feature_batch(c.dataset)))
    chex.assert_shape(out["embedding"], (3, 2 * c.model.dim))


SMALL = {"dim": 16, "num_layers": 1, "mem_layers": 1, "num_heads": 2, "embed_dropout": 0.0, "attn_dropout": 0.0,
         "relu_dropout": 0.0, "res_dropout": 0.0, "out_dropout": 0.0}
KEY = jax.random.key(0, impl="rbg")  # RngBitGenerator keys compile far faster than threefry on CPU


@pytest.fixture(scope="module")
def trained():
    """A small mult trained for 45 Adam steps on a synthetic IEMOCAP-layout set: (module, params, history)."""
    m, _ = build("mult", "iemocap", **SMALL)
    split = mult_split(np.random.default_rng(0), 96, name="iemocap", lens=(8, 10, 9), dims=(12, 5, 6))
    batches = [split_batch(split, np.arange(i, i + 32), "iemocap") for i in (0, 32, 64)]
    params = init_pieces.call(lambda: m.init(KEY, batches[0])["params"])
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, opt, batch):
        (loss, aux), g = jax.value_and_grad(lambda p: losses.affect_loss(m.apply({"params": p}, batch), batch),
                                            has_aux=True)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt, loss, aux["correct"]

    opt, history = tx.init(params), []
    for i in range(45):
        params, opt, loss, correct = step(params, opt, batches[i % 3])
        history.append((float(loss), float(correct) / 32))
    return m, params, history


def test_learns_the_synthetic_emotion_set(trained):
    _, _, history = trained
    first, last = np.mean(history[:3], 0), np.mean(history[-3:], 0)
    assert last[0] < 0.6 * first[0], history
    assert last[1] > 0.85, history  # per-emotion accuracy (chance for the majority "no" is 0.75)


def test_masked_frames_do_not_matter(trained):
    m, params, _ = trained
    ds = load_config("mult", "iemocap").dataset
    ds.feat_dims = {"text": 12, "audio": 5, "video": 6}
    batch = feature_batch(ds)
    apply = jax.jit(lambda b: m.apply({"params": params}, b)["logits"])
    noisy = dict(batch)
    for mod in ("text", "audio", "video"):
        noisy[mod] = jnp.where(batch[f"{mod}_mask"][..., None] > 0, batch[mod], 50.0)
    np.testing.assert_allclose(apply(batch)[:2], apply(noisy)[:2], atol=1e-4)
    changed = dict(batch, audio=batch["audio"] * 3.0)  # a real frame of a source modality does matter
    assert not np.allclose(apply(batch)[:2], apply(changed)[:2])


def test_bad_configurations_are_named():
    batch = feature_batch(load_config("mult", "mosi").dataset)
    for overrides, message in (({"output": "ranking"}, "model.output='ranking'"),
                               ({"targets": ("smell",)}, "model.targets=")):
        m, _ = build("mult", "mosi", **overrides)
        with pytest.raises(ValueError, match=message):
            jax.eval_shape(m.init, jax.random.key(0), batch)
    m, _ = build("mult", "mosi")
    no_text = {k: v for k, v in batch.items() if k != "text"}
    with pytest.raises(ValueError, match="no 'text' features and model.text_vocab_size is 0"):
        jax.eval_shape(lambda: m.init(jax.random.key(0), no_text))


def test_affect_loss_matches_numpy():
    rng = np.random.default_rng(0)
    valid = jnp.array([1.0, 1.0, 0.0])
    pred, label = rng.normal(size=3), rng.normal(size=3)
    loss, aux = losses.affect_loss({"prediction": jnp.asarray(pred)}, {"label": jnp.asarray(label), "valid": valid})
    assert float(loss) == pytest.approx(np.abs(pred - label)[:2].mean(), rel=1e-5)
    logits, labels = rng.normal(size=(3, 4, 2)), rng.integers(0, 2, (3, 4))
    loss, aux = losses.affect_loss({"logits": jnp.asarray(logits)}, {"label": jnp.asarray(labels), "valid": valid})
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    assert float(loss) == pytest.approx(ce[:2].mean(), rel=1e-5)  # nn.CrossEntropyLoss over B*4 rows
    assert float(aux["correct"]) == pytest.approx((logits.argmax(-1) == labels).mean(-1)[:2].sum())
