"""Pieces shared by the affect models `mult` and `hct_dmg`: text input, temporal projection, head.

Text: the MulT-family models take text *features* (GloVe in the MulT pickles, BERT token
features for MUStARD), i.e. the Batch key ``text`` [B,L,Dt]. A batch without ``text`` (the
synthetic MIntRec benchmark of the demo/tiny presets, or any WordPiece dataset) is embedded
with a learned table of ``text_vocab_size`` x ``text_embed_dim`` instead; which path a model
takes is fixed by the batch it is initialised with.

Head (official MulT ``forward``): h = proj2(Dropout(ReLU(proj1(x)))) + x; out_layer(h), whose
size and meaning follow ``output``:
  * ``classification``: logits [B, num_classes]
  * ``regression``: prediction [B] (MOSI/MOSEI, output_dim 1)
  * ``emotion``: logits [B, num_classes, 2] (IEMOCAP, output_dim 8 viewed as [4, 2])
"""
from __future__ import annotations

import flax.linen as nn
import jax

from mmfuse_jax.layers.linear import Dense

OUTPUTS = ("classification", "regression", "emotion")


class TextInput(nn.Module):
    """``batch['text']`` if present, else a learned embedding of ``text_ids``; returns ([B,L,D], mask)."""

    vocab_size: int
    embed_dim: int

    @nn.compact
    def __call__(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        if "text" in batch:
            return batch["text"], batch["text_mask"]
        if self.vocab_size <= 0:
            raise ValueError("the batch has no 'text' features and model.text_vocab_size is 0: set "
                             "config.dataset.feat_dims.text for a feature dataset, or text_vocab_size "
                             "to embed WordPiece ids")
        emb = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(batch["text_ids"])
        return emb * batch["text_mask"][..., None].astype(emb.dtype), batch["text_mask"]


def modality_inputs(batch: dict, text: TextInput) -> dict[str, tuple[jax.Array, jax.Array]]:
    """{modality: (features [B,L,D], mask [B,L])} with padded frames zeroed."""
    x_t, m_t = text(batch)
    out = {"text": (x_t, m_t)}
    for m in ("audio", "video"):
        out[m] = (batch[m], batch[f"{m}_mask"])
    return {m: (x * mask[..., None].astype(x.dtype), mask) for m, (x, mask) in out.items()}


class TemporalProjection(nn.Module):
    """MulT's Conv1d(orig_d -> d, kernel, bias=False); skipped when orig_d == d (as the official code).

    'SAME' zero padding keeps the length (the official code uses kernel 1, padding 0).
    """

    dim: int
    kernel_size: int = 1

    @nn.compact
    def __call__(self, x_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
        if x_btd.shape[-1] == self.dim:
            return x_btd
        h = nn.Conv(self.dim, (self.kernel_size,), padding="SAME", use_bias=False, name="conv")(x_btd)
        return h * mask_bt[..., None].astype(h.dtype)


class AffectHead(nn.Module):
    """Residual block + output layer (see the module docstring for ``output``)."""

    num_classes: int
    output: str = "classification"
    out_dropout: float = 0.0

    @nn.compact
    def __call__(self, x_bd: jax.Array, *, train: bool) -> dict[str, jax.Array]:
        if self.output not in OUTPUTS:
            raise ValueError(f"model.output={self.output!r}: expected one of {list(OUTPUTS)}")
        d = x_bd.shape[-1]
        h = nn.relu(Dense(d, name="proj1")(x_bd))
        h = Dense(d, name="proj2")(nn.Dropout(self.out_dropout)(h, deterministic=not train)) + x_bd
        if self.output == "regression":
            return {"prediction": Dense(1, name="out_layer")(h)[:, 0], "embedding": x_bd}
        if self.output == "emotion":
            logits = Dense(2 * self.num_classes, name="out_layer")(h)
            return {"logits": logits.reshape(-1, self.num_classes, 2), "embedding": x_bd}
        return {"logits": Dense(self.num_classes, name="out_layer")(h), "embedding": x_bd}


def count_parameters(module: nn.Module, batch: dict) -> int:
    """Number of trainable parameters, from shapes only (``jax.eval_shape``, nothing computed)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), batch, train=False)["params"])
    return int(sum(x.size for x in jax.tree_util.tree_leaves(shapes)))


def model_fields(cls, cfg, info: dict, **extra) -> dict:
    """Module fields from ``config.model`` (those the module declares) plus ``num_classes``."""
    names = set(cls.__dataclass_fields__) - {"parent", "name"}
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names}
    return {**fields, "num_classes": info["num_classes"], **extra}
