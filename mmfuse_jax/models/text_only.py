"""`text_only`: BERT -> pooled [CLS] -> dropout -> linear (the MIntRec TEXT baseline).

thuiar/MIntRec methods/TEXT uses BertForSequenceClassification: pooler output, dropout
(hidden_dropout_prob), one linear layer. Audio and video are ignored.
"""
from __future__ import annotations

import flax.linen as nn

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertConfig, BertModel
from mmfuse_jax.layers.linear import Dense


class TextOnly(nn.Module):
    bert: BertConfig
    num_classes: int
    dropout: float = 0.1

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict:
        out = BertModel(self.bert, name="bert")(batch["text_ids"], batch["text_mask"], batch["text_type_ids"],
                                                train=train)
        emb = out["pooled_output"]
        h = nn.Dropout(self.dropout)(emb, deterministic=not train)
        return {"logits": Dense(self.num_classes, name="classifier")(h), "embedding": emb}


def build(cfg, info: dict) -> TextOnly:
    return TextOnly(bert=info["bert"], num_classes=info["num_classes"], dropout=cfg.dropout)


SPEC = registry.register(registry.ModelSpec("text_only", build, registry.fixed_loss(losses.classification_loss),
                                            analyses=("embeddings",)))
