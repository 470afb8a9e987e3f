"""`dyken_hyena` (DyKen-Hyena, arXiv 2509.09940): non-verbal cues generate per-token kernels.

    e = BERT embeddings(text)                                  word + position + type, LN
    c_m = Attn(Q = e, K = V = frames_m), m in cross_modal      cross-modal context per token (Eq. 1)
    w = MLP([c_audio; c_video]) -> [B, L, G, K]                kernel generator (per token, per group)
    h = Hyena(e; short conv kernels = static + w)              dynamic short conv + FFT long conv + gating
    x = e + dropout(h)                                         modulated embeddings
    logits = Linear(pool(BERT encoder(x)))

Underspecified in the paper, our choices (all config fields): the generator is an MLP with
``generator_depth`` GELU layers of ``generator_width``; kernels are shared by ``kernel_groups``
channel groups of the 3·d Hyena channels (``kernel_groups = 3·d`` gives one kernel per channel);
generated kernels are added to Hyena's static kernels; the Hyena output is added to the
embeddings (a residual, so a pretrained BERT sees its own embeddings plus a learned modulation);
a missing modality (all-zero mask) contributes a zero context.

Ablations: ``dynamic_short_conv=False`` (static Hyena kernels only), ``kernel_size`` (1, 3, 5),
``long_conv=False``, ``cross_modal`` ('audio', 'video', 'both').
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertConfig, BertModel
from mmfuse_jax.layers.attention import MultiHeadAttention
from mmfuse_jax.layers.hyena import HyenaOperator

_MODALITIES = {"audio": ("audio",), "video": ("video",), "both": ("audio", "video")}


class CrossModalContext(nn.Module):
    """Per-token context: text tokens query each non-verbal stream -> [B, L, features·#modalities]."""

    features: int
    num_heads: int
    modalities: tuple[str, ...]
    dropout: float = 0.1

    @nn.compact
    def __call__(self, text_btd, batch: dict, *, train: bool):
        contexts = []
        for m in self.modalities:
            ctx = MultiHeadAttention(self.num_heads, self.features, dropout=self.dropout, name=f"{m}_attention")(
                text_btd, batch[m], batch[f"{m}_mask"], train=train)
            present = batch[f"{m}_mask"].any(axis=1).astype(ctx.dtype)[:, None, None]
            contexts.append(ctx * present)
        return jnp.concatenate(contexts, axis=-1)


class KernelGenerator(nn.Module):
    """MLP: context [B,L,C] -> per-token kernels [B,L,groups,kernel_size]."""

    groups: int
    kernel_size: int
    width: int
    depth: int

    @nn.compact
    def __call__(self, ctx_blc):
        h = ctx_blc
        for i in range(self.depth):
            h = nn.gelu(nn.Dense(self.width, name=f"hidden_{i}")(h))
        w = nn.Dense(self.groups * self.kernel_size, kernel_init=nn.initializers.normal(0.02), name="kernels")(h)
        return w.reshape(*w.shape[:2], self.groups, self.kernel_size)


class DyKenHyena(nn.Module):
    bert: BertConfig
    num_classes: int
    kernel_size: int = 3
    dynamic_short_conv: bool = True
    long_conv: bool = True
    cross_modal: str = "both"
    kernel_groups: int = 3
    generator_depth: int = 1
    generator_width: int = 256
    context_heads: int = 8
    filter_width: int = 64
    dropout: float = 0.1

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict:
        d = self.bert.hidden_size
        bert = BertModel(self.bert, name="bert")
        mask = batch["text_mask"]
        e = bert.embed(batch["text_ids"], batch["text_type_ids"], train=train)
        kernels = None
        if self.dynamic_short_conv:
            ctx = CrossModalContext(d, self.context_heads, _MODALITIES[self.cross_modal], self.dropout,
                                    name="context")(e, batch, train=train)
            kernels = KernelGenerator(self.kernel_groups, self.kernel_size, self.generator_width,
                                      self.generator_depth, name="kernel_generator")(ctx)
        h = HyenaOperator(d, self.bert.max_position_embeddings, self.kernel_size, self.long_conv,
                          self.filter_width, name="hyena")(e, mask, kernels, train=train)
        x = e + nn.Dropout(self.dropout)(h, deterministic=not train)
        pooled = bert.pool(bert.encode(x, mask, train=train))
        out = nn.Dropout(self.dropout)(pooled, deterministic=not train)
        return {"logits": nn.Dense(self.num_classes, name="classifier")(out), "embedding": pooled}


def build(cfg, info: dict) -> DyKenHyena:
    from mmfuse_jax.errors import ConfigError

    if cfg.cross_modal not in _MODALITIES:
        raise ConfigError(f"config.model.cross_modal={cfg.cross_modal!r}: expected one of {sorted(_MODALITIES)}")
    if (3 * info["bert"].hidden_size) % cfg.kernel_groups:
        raise ConfigError(f"config.model.kernel_groups={cfg.kernel_groups} must divide the 3·hidden = "
                          f"{3 * info['bert'].hidden_size} Hyena channels")
    return DyKenHyena(bert=info["bert"], num_classes=info["num_classes"], kernel_size=cfg.kernel_size,
                      dynamic_short_conv=cfg.dynamic_short_conv, long_conv=cfg.long_conv,
                      cross_modal=cfg.cross_modal, kernel_groups=cfg.kernel_groups,
                      generator_depth=cfg.generator_depth, generator_width=cfg.generator_width,
                      context_heads=cfg.context_heads, filter_width=cfg.filter_width, dropout=cfg.dropout)


SPEC = registry.register(registry.ModelSpec("dyken_hyena", build, registry.fixed_loss(losses.classification_loss),
                                            analyses=("embeddings",)))
