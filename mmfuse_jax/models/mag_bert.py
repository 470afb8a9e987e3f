"""`mag_bert`: the Multimodal Adaptation Gate on BERT (Rahman et al., ACL 2020), as the MIntRec and
MIntRec2.0 baseline (thuiar/MIntRec backbones/FusionNets/MAG_BERT.py; thuiar/MIntRec2.0
backbones/single_turn/FusionNets/MAG_BERT.py, the same module).

Audio and video are first brought to the text length (the gate works per token). After
``injection_index`` BERT layers (0 = the embedding output: where thuiar's and the original
WasifurRahman/BERT_multimodal_transformer bert.py inject it) each token's hidden state h becomes

    g_v = ReLU(W_gv [v; h] + b_gv),   g_a = ReLU(W_ga [a; h] + b_ga)        gates
    H   = g_v ⊙ (W_v v + b_v) + g_a ⊙ (W_a a + b_a)                          non-verbal shift
    α   = min(‖h‖₂ / (‖H‖₂ + ε) · β_shift, 1),   ‖H‖₂ = 0 counts as 1       ε = 1e-6
    m   = Dropout(LayerNorm(h + α H))                                       LayerNorm eps 1e-5

then the remaining layers, the pooler, dropout (BERT's hidden_dropout_prob) and a linear classifier
(MAG_BertForSequenceClassification). The paper writes one bias b_H outside the gates; the code,
followed here, has the biases inside W_v and W_a.

Alignment (``alignment``): thuiar's config (configs/mag_bert.py, ``aligned_method: 'ctc'``) uses
AlignSubNet's CTC module (from yaohungt/Multimodal-Transformer): a 2-layer LSTM over the frames with
text_len + 1 outputs, softmax over them (index 0 = blank), and the aligned sequence
a_j = Σ_i p[i, j+1] x_i (a soft, unnormalised sum; no CTC loss is trained). ``'ctc'`` does exactly
that, with two changes that do not alter the kept values: (1) p is multiplied by the frame mask;
thuiar zero-pads at the end and the LSTM is causal, so its padded frames also add 0 · p, but ours
add nothing whatever they hold; (2) the LSTM width is the dataset's maximum text length
(``text_len``, thuiar's text_seq_len) and positions past the batch's bucket length (padding tokens,
which no real token attends to) are dropped after the softmax. thuiar skips a modality whose length
already equals text_len; we always align (a shape-dependent branch would change the parameters).
``'mean'`` is a parameter-free alternative: output position j averages the real frames in the j-th
of text_len equal windows of that example (not thuiar's 'avg_pool', which averages the strided
frames j, j + text_len, ... including the zero padding). A missing modality (all-0 mask) aligns to
zeros, so it shifts h only by its gate times b (zero at initialisation).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertConfig, BertModel
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.align import CTCAlign
from mmfuse_jax.layers.linear import Dense

ALIGNMENTS = ("ctc", "mean")
_BERT_INIT = nn.initializers.normal(0.02)  # BertPreTrainedModel._init_weights on MAG's Linear layers


def _norm(x_btd: jax.Array, zero_value: float) -> jax.Array:
    """‖x‖₂ over the last axis in float32, ``zero_value`` where x = 0 (with a finite gradient there)."""
    sq = jnp.square(x_btd.astype(jnp.float32)).sum(-1)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), zero_value)


def mag_alpha(h_btd: jax.Array, shift_btd: jax.Array, beta_shift: float, eps: float = 1e-6) -> jax.Array:
    """α [B, T] = min(‖h‖ / (‖H‖ + ε) · β_shift, 1), with ‖H‖ = 0 replaced by 1 as thuiar's MAG does."""
    return jnp.minimum(_norm(h_btd, 0.0) / (_norm(shift_btd, 1.0) + eps) * beta_shift, 1.0)


class MultimodalAdaptationGate(nn.Module):
    """The gate on aligned streams: h [B, T, H], audio [B, T, Da], video [B, T, Dv] -> m [B, T, H]."""

    beta_shift: float = 0.005
    dropout: float = 0.5
    eps: float = 1e-6

    @nn.compact
    def __call__(self, h_btd, audio_btd, video_btd, *, train: bool = False):
        d = h_btd.shape[-1]
        dense = lambda name: Dense(d, kernel_init=_BERT_INIT, name=name)
        # thuiar's names: W_hv, W_ha (gates; [v; h] and [a; h] in that order), W_v, W_a.
        gate_v = nn.relu(dense("gate_video")(jnp.concatenate([video_btd, h_btd], -1)))
        gate_a = nn.relu(dense("gate_audio")(jnp.concatenate([audio_btd, h_btd], -1)))
        shift = gate_v * dense("project_video")(video_btd) + gate_a * dense("project_audio")(audio_btd)
        alpha = mag_alpha(h_btd, shift, self.beta_shift, self.eps)
        self.sow("intermediates", "alpha", alpha)
        m = nn.LayerNorm(epsilon=1e-5, name="LayerNorm")(h_btd + alpha[..., None].astype(shift.dtype) * shift)
        return nn.Dropout(self.dropout)(m, deterministic=not train)


def mean_align(x_bsd: jax.Array, mask_bs: jax.Array, out_len: int) -> jax.Array:
    """[B, out_len, D]: position j = mean of the real frames [⌊j n/out_len⌋, ⌈(j+1) n/out_len⌉) of each
    example (n real frames, padded at the end; neighbouring windows may share a frame; n = 0 gives 0)."""
    n = mask_bs.astype(jnp.int32).sum(-1)[:, None, None]          # [B, 1, 1]
    j = jnp.arange(out_len)[None, :, None]
    start = (j * n) // out_len
    end = jnp.maximum(-((-(j + 1) * n) // out_len), start + 1)    # ceil, at least one frame
    i = jnp.arange(x_bsd.shape[1])[None, None, :]
    w = ((i >= start) & (i < end) & (mask_bs[:, None, :] > 0)).astype(x_bsd.dtype)  # [B, out_len, S]
    w = w / jnp.maximum(w.sum(-1, keepdims=True), 1)
    return jnp.einsum("bls,bsd->bld", w, x_bsd)


class MagBert(nn.Module):
    bert: BertConfig
    num_classes: int
    text_len: int                   # the dataset's max text length: the CTC LSTM width (thuiar text_seq_len)
    beta_shift: float = 0.005
    mag_dropout: float = 0.5        # thuiar dropout_prob: the dropout after the gate's LayerNorm
    dropout: float = 0.1            # before the classifier (BERT hidden_dropout_prob in thuiar)
    injection_index: int = 0        # BERT layers before the gate (0: on the embedding output)
    alignment: str = "ctc"          # 'ctc' | 'mean' (module docstring)

    def _aligned(self, name: str, x_bsd, mask_bs, length: int):
        if self.alignment == "ctc":
            x = CTCAlign(self.text_len, name=f"align_{name}")(x_bsd, mask_bs)
        else:
            x = mean_align(x_bsd, mask_bs, self.text_len)
        return x[:, :length]

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict:
        length = batch["text_ids"].shape[1]
        if length > self.text_len:
            raise ConfigError(f"config.model.text_len={self.text_len} is shorter than this batch's text "
                              f"length {length}: it must be the dataset's max_len.text")
        audio = self._aligned("audio", batch["audio"], batch["audio_mask"], length)
        video = self._aligned("video", batch["video"], batch["video_mask"], length)
        mag = MultimodalAdaptationGate(self.beta_shift, self.mag_dropout, name="mag")
        out = BertModel(self.bert, name="bert")(
            batch["text_ids"], batch["text_mask"], batch["text_type_ids"], train=train,
            adapter=lambda h: mag(h, audio, video, train=train), adapter_index=self.injection_index)
        emb = out["pooled_output"]
        h = nn.Dropout(self.dropout)(emb, deterministic=not train)
        return {"logits": Dense(self.num_classes, name="classifier")(h),
                "embedding": emb}


def build(cfg, info: dict) -> MagBert:
    layers = info["bert"].num_hidden_layers
    if cfg.alignment not in ALIGNMENTS:
        raise ConfigError(f"config.model.alignment={cfg.alignment!r}: expected one of {list(ALIGNMENTS)}")
    if not 0 <= cfg.injection_index <= layers:
        raise ConfigError(f"config.model.injection_index={cfg.injection_index}: expected 0..{layers} "
                          f"(0 = after the embeddings; BERT has {layers} layers)")
    return MagBert(bert=info["bert"], num_classes=info["num_classes"], text_len=int(cfg.text_len),
                   beta_shift=cfg.beta_shift, mag_dropout=cfg.mag_dropout, dropout=cfg.dropout,
                   injection_index=cfg.injection_index, alignment=cfg.alignment)


SPEC = registry.register(registry.ModelSpec("mag_bert", build, registry.fixed_loss(losses.classification_loss),
                                            analyses=("embeddings",)))
