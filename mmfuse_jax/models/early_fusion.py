"""`early_fusion`: per-modality encoders, masked pooling, concatenation, MLP classifier.

Text: BERT pooled [CLS]. Audio/video: `SequenceEncoder` with ``block='conv'`` (projection, Conv1D, masked
mean+max pooling). The three vectors are concatenated and classified by a two-layer MLP.
A simple, strong baseline for the synthetic benchmark and a check that fusion uses the
non-verbal streams.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertConfig, BertModel
from mmfuse_jax.encoders.sequence import SequenceEncoder
from mmfuse_jax.layers.linear import Dense


class EarlyFusion(nn.Module):
    bert: BertConfig
    num_classes: int
    hidden: int = 64
    dropout: float = 0.1

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict:
        text = BertModel(self.bert, name="bert")(batch["text_ids"], batch["text_mask"], batch["text_type_ids"],
                                                 train=train)["pooled_output"]
        audio, video = (SequenceEncoder(self.hidden, dropout=self.dropout, block="conv", pooling="mean_max",
                                        name=f"{m}_encoder")(batch[m], batch[f"{m}_mask"], train=train)
                        for m in ("audio", "video"))
        fused = jnp.concatenate([text, audio, video], axis=-1)
        h = nn.gelu(Dense(self.hidden, name="fusion")(fused))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return {"logits": Dense(self.num_classes, name="classifier")(h), "embedding": h}


def build(cfg, info: dict) -> EarlyFusion:
    return EarlyFusion(bert=info["bert"], num_classes=info["num_classes"], hidden=cfg.hidden,
                       dropout=cfg.dropout)


SPEC = registry.register(registry.ModelSpec("early_fusion", build, registry.fixed_loss(losses.classification_loss),
                                            analyses=("embeddings",)))
