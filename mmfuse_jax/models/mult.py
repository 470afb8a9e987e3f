"""`mult`: the Multimodal Transformer (Tsai et al., ACL 2019; yaohungt/Multimodal-Transformer src/models.py).

    X_m --Conv1d(k_m, no bias)--> [B, L_m, d]                            for m in text, audio, video
    Z_{t<-a}, Z_{t<-v}, Z_{a<-t}, Z_{a<-v}, Z_{v<-t}, Z_{v<-a}           six crossmodal transformers
    H_m = Transformer_mem([Z_{m<-s1}; Z_{m<-s2}])   (2d, self-attention "memory", >= 3 layers)
    h   = [H_t[last]; H_a[last]; H_v[last]]   (6d) -> residual block -> output layer

As the official code: dropout ``embed_dropout`` on the raw text input; the attention dropout of a
crossmodal transformer is the one of its *source* modality (``get_network``: 'la' uses
attn_dropout_a); the memories use the text one; ``targets`` picks the partial modes
(``--lonly/--aonly/--vonly``). Differences: "last" is each row's last *valid* step (the official
code takes step -1 of full-length sequences, which is the same on the MulT pickles), and the
temporal convolution pads 'SAME' (the official one has kernel 1).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mmfuse_jax import losses, registry
from mmfuse_jax.layers.crossmodal import CrossmodalTransformer, last_valid
from mmfuse_jax.models._affect import AffectHead, TemporalProjection, TextInput, modality_inputs, model_fields

MODALITIES = ("text", "audio", "video")


class MulT(nn.Module):
    num_classes: int
    output: str = "classification"        # 'classification' | 'regression' | 'emotion'
    dim: int = 30                         # official code: d_l = d_a = d_v = 30 (paper Table 5: 40)
    num_heads: int = 5                    # main.py --num_heads
    num_layers: int = 5                   # main.py --nlevels
    mem_layers: int = 3                   # get_network(..., layers=3) -> max(nlevels, 3)
    conv_kernel: tuple[int, int, int] = (1, 1, 1)  # text, audio, video (official code: 1)
    attn_dropout: float = 0.1             # source text (and the memories)
    attn_dropout_audio: float = 0.0
    attn_dropout_video: float = 0.0
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.25
    out_dropout: float = 0.0
    use_future_mask: bool = True          # main.py --attn_mask (store_false: on by default)
    targets: tuple[str, ...] = MODALITIES
    text_vocab_size: int = 0              # > 0: embed text_ids when the batch has no 'text' features
    text_embed_dim: int = 300

    def _transformer(self, name: str, attn_dropout: float, layers: int) -> CrossmodalTransformer:
        return CrossmodalTransformer(self.num_heads, layers, attn_dropout, self.relu_dropout, self.res_dropout,
                                     self.embed_dropout, self.use_future_mask, name=name)

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict:
        if not self.targets or any(t not in MODALITIES for t in self.targets):
            raise ValueError(f"model.targets={self.targets!r}: expected a non-empty subset of {MODALITIES}")
        feats = modality_inputs(batch, TextInput(self.text_vocab_size, self.text_embed_dim, name="text_input"))
        x_t, m_t = feats["text"]
        feats["text"] = (nn.Dropout(self.embed_dropout)(x_t, deterministic=not train), m_t)
        kernels = dict(zip(MODALITIES, self.conv_kernel))
        proj = {m: (TemporalProjection(self.dim, kernels[m], name=f"proj_{m}")(x, mask), mask)
                for m, (x, mask) in feats.items()}
        source_dropout = {"text": self.attn_dropout, "audio": self.attn_dropout_audio,
                          "video": self.attn_dropout_video}
        last = []
        for target in self.targets:
            x, mask = proj[target]
            # Crossmodal transformers into the target (e.g. "(V,A) -> L").
            zs = [self._transformer(f"{target}_with_{s}", source_dropout[s], self.num_layers)(
                x, mask, *proj[s], train=train) for s in MODALITIES if s != target]
            h = self._transformer(f"{target}_mem", self.attn_dropout, max(self.num_layers, self.mem_layers))(
                jnp.concatenate(zs, axis=-1), mask, train=train)
            last.append(last_valid(h, mask))
        return AffectHead(self.num_classes, self.output, self.out_dropout, name="head")(
            jnp.concatenate(last, axis=-1), train=train)


def build(cfg, info: dict) -> MulT:
    return MulT(**model_fields(MulT, cfg, info))


SPEC = registry.register(registry.ModelSpec("mult", build, registry.fixed_loss(losses.affect_loss), uses_bert=False,
                                            analyses=("embeddings",)))
