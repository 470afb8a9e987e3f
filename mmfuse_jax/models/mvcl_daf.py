"""`mvcl_daf` (MVCL-DAF++, arXiv 2509.17446): a coarse global view across modalities, fused with
fine-grained token features by dynamic attention, trained with prototype-aware and multi-view
contrastive losses.

    p     = [CLS] text [SEP] [MASK]^K [SEP]                   text + K label slots (segment 1)
    H     = BERT(p)                                           fine-grained text tokens   [B, L', d]
    A, V  = SelfAttn_m(W_m x_m)                               audio / video encoders     [B, T_m, d]

``coarse_view='per_modality'`` (the default, the paper's: a global summary per modality, and the
coarse-to-fine DAF inside the modality encoders, where its Fig. places it):

    g_t, g_a, g_v = MAT([z_t; z_a; z_v; H + e_t; A + e_a; V + e_v])_{0..2}   one summary per modality [B, d]
    H, A, V = C2F(H, g_t), C2F(A, g_a), C2F(V, g_v)          coarse-to-fine in each encoder (`CoarseToFine`)
    Â, V̂  = Attn(Q = H, K = V = A | V)                        audio / video per text token [B, L', d]
    F     = DAF(H, Â, V̂)                                      token-level fusion          [B, L', d]

``coarse_view='text_queried'`` (this project's first reading): one global vector from the
text-queried features, joined to the fusion:

    Â, V̂  = Attn(Q = H, K = V = A | V)
    g     = MAT([z; H + e_text; Â + e_audio; V̂ + e_video])_0  Modality-Aware Transformer: coarse global [B, d]
    F     = DAF(H, Â, V̂, g)                                   coarse-to-fine fusion      [B, L', d]

Both:  e = BERT pooler(F);  logits = W · Dropout(e)            ``embedding`` = e

DAF, after the predecessor MVCL-DAF (DAF = PReLU(Dynamic layer([v; t])) ⊙ Linear(v); BiLSTM ->
sigmoid modality attention, normalised over modalities), with the coarse g joined to its inputs
('text_queried'; 'per_modality' has no g here, its g_m entered the encoders):

    u_m = PReLU_m(Dyn_m([X̂_m; H; g])) ⊙ W_m X̂_m                        m in (audio, video)
    s_m = sigmoid(w_m · [u_m; g]);  α_m = s_m / (Σ_m s_m + 1e-6)
    F   = Dropout(LN(H + Σ_m α_m u_m + sigmoid(W_c [H; g]) ⊙ W_g g))

Losses (`loss_fn`): CE (+ outlier exposure on out-of-scope rows: `losses.open_set_cross_entropy`)
+ ``prototype_weight`` · `losses.prototype_contrastive_loss`(e) + ``multiview_weight`` ·
`losses.multiview_contrastive_loss`(anchor, [H, V̂, Â, F] at the slots), τ = ``temperature``.
The anchor is the text + label: the same BERT on [CLS] text [SEP] <intent-name tokens> [SEP],
averaged over the name's tokens; the views (masked text H, video V̂, audio Â, fused F) are averaged
over the K [MASK] slots. This follows the predecessor MVCL-DAF's code (a TCL-MAP descendant), which
reads every view at ``label_len`` condition positions of the classifier's text sequence and the
anchor at the same positions of a text + label sequence encoded by a second BERT.

Label text: the intent names (``config.model.label_names``, filled by the config from the format's
LABELS) are tokenised ONCE, when the model is built, with the WordPiece vocabulary named by
``config.model.label_vocab``: ``'checkpoint'`` reads the tokenizer at ``config.model.bert_path``
(a reference to ``config.dataset.bert_path``, so overriding the dataset's path moves it too);
``'synthetic'`` uses the synthetic benchmark's vocabulary, which the config gives as its tokens in
``config.model.vocab_tokens`` (the one it writes next to its BERT), so the demo/tiny models can be
built before the benchmark exists.
The token ids are module constants; the training loop passes nothing new. On the synthetic
benchmark the intent names are outside the toy vocabulary (they tokenise to [UNK]), so there the
multi-view loss aligns instances only; on the real releases the names are ordinary words.

Choices where the paper is silent (each a config field):
  * ``label_len`` K = 4 label slots (the MIntRec/MIntRec2.0 intent names are one to three words);
    longer names are truncated, shorter ones padded (masked out).
  * The anchor shares the classifier's BERT (the official MVCL-DAF code has a second BERT; the
    loop loads pretrained weights into ``bert`` only, and sharing halves the memory). It needs a
    second BERT pass, so the views are computed only when ``train=True``; at eval the loss is
    CE + prototype.
  * Audio/video encoders: Linear -> d, then ``encoder_layers`` MulT-style self-attention layers
    (`encoders/sequence.SequenceEncoder`, block 'crossmodal'; the predecessor used a 6-layer transformer for
    video, a BiLSTM for audio).
  * MAT: learned global token(s) and modality-type embeddings, ``mat_layers`` pre-norm self-attention
    layers. 'per_modality': one global token per modality over the text tokens and each modality's
    own encoded frames (L' + T_a + T_v + 3 tokens: up to ~740 on MIntRec, the cost of the paper's
    reading); 'text_queried': one token over the text tokens and the audio/video features aligned to
    them (3·L'+1 tokens). C2F (the encoders' coarse-to-fine DAF) is the DAF below for one modality
    and its own g_m, added to the tokens with a per-token sigmoid attention. ``use_global=False``
    drops the MAT and every g (the predecessor's DAF), in both views.
  * Token-level alignment by text-queried attention (the predecessor's AlignSubNet pooled frames
    to the text length); a missing modality (all-zero mask) contributes nothing.
  * Dyn_m: ``daf_depth`` Dense layers (GELU between); the predecessor's BiLSTM scorer is a
    per-token linear scorer conditioned on g; g also enters F through a per-token gate.
  * Out-of-scope rows (label >= C) are left out of both contrastive terms (no prototype, no name).
  * Gradients flow through the batch prototypes (no stop-gradient); weights 1.0 (the predecessor
    adds its contrastive loss with weight 1; the prototype weight is not reported).

Switches: ``prototype_weight=0`` / ``multiview_weight=0`` (loss ablations), ``use_global=False``
(no coarse global view), ``coarse_view``, ``temperature``, ``label_len``, ``encoder_layers``, ``mat_layers``,
``daf_depth``.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertConfig, BertModel
from mmfuse_jax.encoders.sequence import SequenceEncoder
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.attention import MultiHeadAttention
from mmfuse_jax.layers.crossmodal import CrossmodalLayer
from mmfuse_jax.layers.linear import Dense
from mmfuse_jax.models.mvcl_prompt import label_table, prompt_sequence, slot_mean, tokenize_labels

__all__ = ["MVCLDAF", "build", "label_table", "loss_fn", "make_loss", "prompt_sequence", "slot_mean",
           "tokenize_labels"]

NONVERBAL = ("audio", "video")
VIEWS = ("text", "video", "audio", "fused")  # order of the multi-view views
COARSE_VIEWS = ("per_modality", "text_queried")


# ------------------------------------------------------------------------------------------ modules

class ModalityAwareTransformer(nn.Module):
    """Global token(s) + modality-type embeddings over all modalities' tokens -> the coarse view:
    one global g [B, d], or (``per_modality``) one summary per stream, g_m = its own global token
    (+ its type embedding) after attending to every stream [B, S, d]."""

    num_heads: int
    num_layers: int
    dropout: float = 0.1
    per_modality: bool = False

    @nn.compact
    def __call__(self, streams: Sequence[tuple[jax.Array, jax.Array]], *, train: bool):
        d = streams[0][0].shape[-1]
        b, dtype = streams[0][0].shape[0], streams[0][0].dtype
        init = nn.initializers.normal(0.02)
        types = self.param("modality_embedding", init, (len(streams), d))
        if self.per_modality:
            lead = (self.param("global_tokens", init, (len(streams), d)) + types).astype(dtype)
        else:
            lead = self.param("global_token", init, (d,)).astype(dtype)[None]
        n = lead.shape[0]
        x = jnp.concatenate([jnp.broadcast_to(lead, (b, n, d))]
                            + [s + types[i].astype(s.dtype) for i, (s, _) in enumerate(streams)], axis=1)
        mask = jnp.concatenate([jnp.ones((b, n), bool)] + [m.astype(bool) for _, m in streams], axis=1)
        for i in range(self.num_layers):
            x = CrossmodalLayer(self.num_heads, relu_dropout=self.dropout, res_dropout=self.dropout,
                                name=f"layer_{i}")(x, None, mask, train=train)
        g = nn.LayerNorm(name="norm")(x[:, :n])
        return g if self.per_modality else g[:, 0]


def _prelu(module: nn.Module, name: str, z: jax.Array) -> jax.Array:
    slope = module.param(name, nn.initializers.constant(0.25), ())
    return jnp.where(z >= 0, z, slope.astype(z.dtype) * z)


class CoarseToFine(nn.Module):
    """The coarse-to-fine DAF inside one modality encoder (``coarse_view='per_modality'``): the
    modality's tokens X [B, T, d] refined by its coarse summary g_m [B, d]:

        u = PReLU(Dyn([X; g_m])) ⊙ W X;   a = sigmoid(w · [u; g_m]);   X̃ = Dropout(LN(X + a ⊙ u))
    """

    depth: int = 2
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x_btd, g_bd, *, train: bool):
        d = x_btd.shape[-1]
        ctx = jnp.broadcast_to(g_bd[:, None, :], x_btd.shape)
        z = jnp.concatenate([x_btd, ctx], axis=-1)
        for i in range(self.depth):  # the dynamic layer Dyn([X; g_m])
            z = Dense(d, name=f"dynamic_{i}")(z if i == 0 else nn.gelu(z))
        u = _prelu(self, "prelu", z) * Dense(d, name="value")(x_btd)
        a = nn.sigmoid(Dense(1, name="score")(jnp.concatenate([u, ctx], axis=-1)))
        return nn.Dropout(self.dropout)(nn.LayerNorm(name="norm")(x_btd + a * u), deterministic=not train)


class DynamicAttentionFusion(nn.Module):
    """Coarse-to-fine DAF (module docstring): text tokens H + gated, modality-weighted Â/V̂ (+ gated g)."""

    depth: int = 2
    dropout: float = 0.1

    @nn.compact
    def __call__(self, h_btd, streams: dict[str, tuple[jax.Array, jax.Array]], g_bd=None, *, train: bool):
        d = h_btd.shape[-1]
        ctx = [] if g_bd is None else [jnp.broadcast_to(g_bd[:, None, :], h_btd.shape)]
        weighted, scores = [], []
        for m, (x_btd, present_b) in streams.items():
            z = jnp.concatenate([x_btd, h_btd, *ctx], axis=-1)
            for i in range(self.depth):  # the dynamic layer: Dyn_m([X̂_m; H; g])
                z = Dense(d, name=f"{m}_dynamic_{i}")(z if i == 0 else nn.gelu(z))
            gate = _prelu(self, f"{m}_prelu", z)
            present = present_b.astype(h_btd.dtype)[:, None, None]
            u = gate * Dense(d, name=f"{m}_value")(x_btd) * present
            s = nn.sigmoid(Dense(1, name=f"{m}_score")(jnp.concatenate([u, *ctx], axis=-1))) * present
            weighted.append(u)
            scores.append(s)
        total = sum(scores) + 1e-6
        fused = h_btd + sum(s / total * u for s, u in zip(scores, weighted))
        if ctx:
            gate_g = nn.sigmoid(Dense(d, name="global_gate")(jnp.concatenate([h_btd, ctx[0]], axis=-1)))
            fused = fused + gate_g * Dense(d, name="global_value")(g_bd)[:, None, :]
        return nn.Dropout(self.dropout)(nn.LayerNorm(name="norm")(fused), deterministic=not train)


class MVCLDAF(nn.Module):
    bert: BertConfig
    num_classes: int
    label_tokens: tuple[tuple[int, ...], ...]   # WordPiece ids of each intent name (<= label_len each)
    mask_token_id: int
    sep_token_id: int
    label_len: int = 4
    use_global: bool = True
    coarse_view: str = "per_modality"  # or 'text_queried' (module docstring)
    encoder_layers: int = 2
    mat_layers: int = 2
    num_heads: int = 8
    daf_depth: int = 2
    dropout: float = 0.1
    multiview_views: bool = True  # emit the multi-view contrastive inputs in training (multiview_weight > 0)

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict:
        d, k = self.bert.hidden_size, self.label_len
        b, length = batch["text_ids"].shape
        if length + k + 1 > self.bert.max_position_embeddings:
            raise ConfigError(f"text length {length} + {k} label slots + [SEP] exceeds the BERT's "
                              f"{self.bert.max_position_embeddings} positions: lower config.model.label_len "
                              "or config.dataset.max_len.text")
        bert = BertModel(self.bert, name="bert")
        ones_bk = jnp.ones((b, k), jnp.int32)
        ids, mask, segment, slot_pos = prompt_sequence(batch["text_ids"], batch["text_mask"],
                                                       ones_bk * self.mask_token_id, ones_bk, self.sep_token_id)
        with_views = self.multiview_views and train
        if with_views:  # the anchor rides in the same BERT call (one graph, one pass over 2B rows)
            name_ids, name_mask = self._gold_names(batch["label"])
            anchor_seq = prompt_sequence(batch["text_ids"], batch["text_mask"], name_ids, name_mask,
                                         self.sep_token_id)
            both = bert(*(jnp.concatenate([x, y]) for x, y in zip((ids, mask, segment), anchor_seq[:3])),
                        train=train)["sequence_output"]
            h, h_anchor = both[:b], both[b:]
        else:
            h = bert(ids, mask, segment, train=train)["sequence_output"]
        frames, present = {}, {}
        for m in NONVERBAL:
            frames[m] = SequenceEncoder(d, self.num_heads, self.encoder_layers, self.dropout,
                                        name=f"{m}_encoder")(batch[m], batch[f"{m}_mask"], train=train)
            present[m] = batch[f"{m}_mask"].any(axis=1)
        per_modality = self.use_global and self.coarse_view == "per_modality"
        if per_modality:  # coarse summaries of every modality, then coarse-to-fine inside each encoder
            h, frames = self._coarse_to_fine(h, mask, frames, batch, train=train)
        aligned = {m: MultiHeadAttention(self.num_heads, d, dropout=self.dropout, name=f"{m}_alignment")(
            h, frames[m], batch[f"{m}_mask"], train=train) * present[m].astype(h.dtype)[:, None, None]
            for m in NONVERBAL}
        g = None
        if self.use_global and not per_modality:  # a missing modality's tokens are masked out of the MAT
            g = ModalityAwareTransformer(self.num_heads, self.mat_layers, self.dropout, name="mat")(
                [(h, mask)] + [(aligned[m], mask * present[m][:, None]) for m in NONVERBAL], train=train)
        fused = DynamicAttentionFusion(self.daf_depth, self.dropout, name="daf")(
            h, {m: (aligned[m], present[m]) for m in NONVERBAL}, g, train=train)
        emb = bert.pool(fused)
        logits = Dense(self.num_classes, name="classifier")(nn.Dropout(self.dropout)(emb, deterministic=not train))
        out = {"logits": logits, "embedding": emb}
        if with_views:
            out["multiview_anchor"] = slot_mean(h_anchor, anchor_seq[3], name_mask)
            views = {"text": h, "video": aligned["video"], "audio": aligned["audio"], "fused": fused}
            out["multiview_views"] = jnp.stack([slot_mean(views[v], slot_pos, ones_bk) for v in VIEWS], axis=1)
        return out

    def _coarse_to_fine(self, h, mask, frames: dict, batch: dict, *, train: bool):
        """The paper's coarse view (module docstring): the MAT over the text tokens and each modality's
        own encoded frames gives g_text, g_audio, g_video; each encoder's tokens are then refined by
        its own summary (`CoarseToFine`). Returns the refined text tokens and frames."""
        streams = [(h, mask)] + [(frames[m], batch[f"{m}_mask"]) for m in NONVERBAL]
        g = ModalityAwareTransformer(self.num_heads, self.mat_layers, self.dropout, per_modality=True,
                                     name="mat")(streams, train=train)
        refined = [CoarseToFine(self.daf_depth, self.dropout, name=f"{m}_coarse_to_fine")(x, g[:, i], train=train)
                   for i, (m, (x, _)) in enumerate(zip(("text", *NONVERBAL), streams))]
        return refined[0], dict(zip(NONVERBAL, refined[1:]))

    def _gold_names(self, label_b):
        """Name tokens [B, K] and their mask of each row's gold intent (OOS rows: intent 0, ignored by the loss)."""
        table_ids, table_mask = (jnp.asarray(t) for t in label_table(self.label_tokens, self.label_len))
        label = label_b.astype(jnp.int32)
        row = jnp.where((label >= 0) & (label < self.num_classes), label, 0)
        return table_ids[row], table_mask[row]


# --------------------------------------------------------------------------------------------- loss

def loss_fn(outputs: dict, batch: dict, *, prototype_weight: float = 1.0, multiview_weight: float = 1.0,
            temperature: float = 0.1) -> tuple[jax.Array, dict]:
    """CE (+ outlier exposure on OOS rows) + prototype_weight·L_proto + multiview_weight·L_mv.

    A contrastive term is on when its weight is > 0 (the multi-view one only when the model emitted
    the views: in training). Every mean is weighted by ``valid``; OOS rows (label >= C) count for the
    outlier-exposure term only. aux: ce, oe, correct, and prototype / multiview when on.
    """
    logits, labels, valid = outputs["logits"], batch["label"], batch["valid"].astype(jnp.float32)
    c = logits.shape[-1]
    loss, aux = losses.open_set_cross_entropy(logits, labels, valid)
    if prototype_weight > 0:
        proto = losses.prototype_contrastive_loss(outputs["embedding"], labels, valid, c, temperature)
        loss = loss + prototype_weight * proto
        aux["prototype"] = proto
    if multiview_weight > 0 and "multiview_anchor" in outputs:
        known = valid * (labels >= 0) * (labels < c)
        mv = losses.multiview_contrastive_loss(outputs["multiview_anchor"], outputs["multiview_views"], known,
                                               temperature)
        loss = loss + multiview_weight * mv
        aux["multiview"] = mv
    return loss, aux


def make_loss(config):
    """`loss_fn` with the loss weights and temperature of config.model."""
    m = config.model
    return functools.partial(loss_fn, prototype_weight=float(m.prototype_weight),
                             multiview_weight=float(m.multiview_weight), temperature=float(m.temperature))


def build(cfg, info: dict) -> MVCLDAF:
    bert, num_classes = info["bert"], info["num_classes"]
    if bert.hidden_size % cfg.num_heads:
        raise ConfigError(f"config.model.num_heads={cfg.num_heads} must divide the BERT hidden size {bert.hidden_size}")
    if cfg.label_len < 1 or cfg.daf_depth < 1 or cfg.temperature <= 0:
        raise ConfigError(f"config.model: label_len={cfg.label_len} and daf_depth={cfg.daf_depth} must be >= 1, "
                          f"temperature={cfg.temperature} > 0")
    if len(cfg.label_names) < num_classes:
        raise ConfigError(f"config.model.label_names names {len(cfg.label_names)} intents; the dataset has "
                          f"{num_classes} classes")
    prompt = tokenize_labels(cfg.label_names, cfg.label_vocab, cfg.bert_path, cfg.label_len,
                             cfg.get("vocab_tokens", ()))
    if cfg.get("coarse_view", "per_modality") not in COARSE_VIEWS:
        raise ConfigError(f"config.model.coarse_view={cfg.coarse_view!r}: expected one of {list(COARSE_VIEWS)}")
    fields = ("label_len", "use_global", "coarse_view", "encoder_layers", "mat_layers", "num_heads", "daf_depth",
              "dropout")
    return MVCLDAF(bert=bert, num_classes=num_classes, multiview_views=cfg.multiview_weight > 0, **prompt,
                   **{f: cfg[f] for f in fields})


SPEC = registry.register(registry.ModelSpec("mvcl_daf", build, make_loss, analyses=("embeddings",)))
