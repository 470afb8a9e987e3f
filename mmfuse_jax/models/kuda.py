"""`kuda`: Knowledge-Guided Dynamic Modality Attention Fusion (KuDA, arXiv 2410.04491).

A port of the official forward (github:MKMaS-GUET/KuDA @ e60ef6b; layer-by-layer account in
shared/papers/kuda_official_notes.md). Shapes for CH-SIMS (text 39, video 55 x 709, audio 400 x 33):

  text  : BERT -> hidden states h0..h12; adapters on LN(h0 + h3), LN(d + h6), LN(d + h9), LN(d + h11)
          -> U_T = [h12; d]                                                     [B, 39, 2 Ht]
  video : Linear(709 -> 128) + learned positions -> 4 post-LN encoder layers h0..h4; spci = LN(h4);
  audio   adapters on LN(h0 + h1), LN(d + h2), LN(d + h3) -> U_m = [spci; d]   [B, L_m, 256]
  decoders (stage 1): mean over time -> MLP -> unimodal sentiment u_m           [B]
  fusion: h_m = Linear_len(Linear_dim(U_m)^T)^T [B, 39, 256]; src = h_T + h_V + h_A; 3 blocks of
          (dynamic routing over cross-modal transformers, self-attention, FFN); NCE(h_m, src); head -> [B]

Stage 1 (``stage=1``, ``modality``): one modality's encoder + decoder, trained on its unimodal label.
Stage 2 (``stage=2``): the whole model; loss MSE + ``nce_weight`` * NCE (official train.py).

Sentiment ratio (``ratio_mode``):
  * ``'official'`` (default): during training r_m = softmax-like exp(-k (u_m - y)^2) of the *ground-truth*
    label y and the block fuses LN(LN_T(c_T + r_T c_T) + LN_V(..) + LN_A(..)); at evaluation there is no
    label and the block fuses LN(c_T + c_V + c_A). r_m is one scalar per sample and LN_m is invariant to
    scaling its input, so the ratio changes nothing (up to LayerNorm's eps): a numerical no-op, kept
    because the code does it (and LN_m's affine parameters do act in training).
  * ``'paper'``: the ratio really weights the modalities, with the same formula at train and test:
    out = LN(sum_m r_m LN_m(c_m)). No label is needed: a first pass with uniform weights (1/3) gives the
    model's own multimodal estimate y0 (gradient stopped), r_m = exp(-k (u_m - y0)^2) / sum, and the
    second pass fuses with r. We use the model's own estimate rather than the label so training and
    inference see the same ratios (the paper weights by agreement with the multimodal sentiment).
  * ``'attention'``: the ratio enters the dynamic modality attention of the fusion, as the paper
    describes. Our reading: the official block sums the modality streams LN_m(c_m + r_m c_m) with equal
    weights, i.e. a uniform attention over modalities; we add log r_m to those (uniform) attention
    logits, softmax_m(log r_m) = r_m, and scale by M so the weights average 1:
    fused = sum_m M r_m LN_m(c_m + r_m c_m). r_m = exp(-k (u_m - y)^2) / sum (u_m: the decoders'
    unimodal predictions). Training: y = the label (as the paper and the official code); inference has
    no label, so (``ratio_inference``) ``'dynamic'``: y = mean_m u_m, the unimodal consensus, or
    ``'fixed'``: uniform r_m = 1/M. With k = 0 the ratios are uniform and the training forward equals
    'official''s; at evaluation 'attention' keeps this path (official switches to LN(c_T + c_V + c_A)).
    Gradients flow through r_m into the unimodal encoders, as in the official code (nothing detached).
  * ``'none'``: the evaluation path at train and test (ablation: no ratio).

Fusion (``fusion``, the paper's open question 3): ``'attention'`` (default, paper and official code) is
the dynamic modality attention fusion above (the DyRout blocks); ``'concat'`` replaces the whole fusion
module by src = Linear([h_T; h_V; h_A]) (width 3·hidden -> hidden, per text position), ``'add'`` by
src = h_T + h_V + h_A (the blocks' own input). Everything else (encoders, decoders, length alignment,
NCE(h_m, src), head) is unchanged; the sentiment ratio has nowhere to act, so ``ratio_mode`` must be
'official' or 'none' (neither changes these variants) and no ratio is returned.

Official weights: `params_from_official` / `params_to_official` (kuda_official.py) convert the official
state_dict; tests/models/test_kuda_official.py checks this forward against the official PyTorch code.

Differences from the official code (why): padding rows of our fixed-size batch are excluded from the
NCE negatives (the official last batch is just shorter); inputs shorter than the configured lengths
are zero-padded (the official data are pre-padded to those lengths); layer sizes follow the BERT
width instead of the hard-coded 768; attention over an all-padding sequence is uniform (PyTorch: NaN).
"""
from __future__ import annotations

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertConfig, BertModel
from mmfuse_jax.encoders.sequence import SequenceEncoder
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.linear import Linear
from mmfuse_jax.layers.transformer import layer_norm
from mmfuse_jax.models import kuda_recipe
from mmfuse_jax.models.kuda_layers import (
    CrossTransformer,
    Decoder,
    FeedForward,
    MixDomainAdapter,
    SentiHead,
    cpc_nce,
    multi_h_atten,
    sentiment_ratio,
)

MODALITIES = kuda_recipe.MODALITIES  # the official order T, V, A
RATIO_MODES = ("official", "paper", "attention", "none")
RATIO_INFERENCE = ("dynamic", "fixed")
FUSIONS = ("attention", "concat", "add")


def default_taps(num_layers: int) -> tuple[int, ...]:
    """BERT layers the text adapters read: 3, 6, 9, 11 of 12 (official), scaled for smaller BERTs."""
    if num_layers == 12:
        return (3, 6, 9, 11)
    return tuple(max(1, min(num_layers, (t * num_layers) // 12)) for t in (3, 6, 9, 11))


def _fit(x: jax.Array, length: int, what: str) -> jax.Array:
    """Zero-pad the time axis (axis 1) to ``length``; the official model has fixed lengths."""
    if x.shape[1] > length:
        raise ConfigError(f"KuDA: {what} has {x.shape[1]} steps but config.model.{what}_len is {length} "
                          "(the length-alignment layers need fixed lengths: raise it to the dataset max_len)")
    pad = [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, pad)


class UniEncoder(SequenceEncoder):
    """``UniEncoder`` for video/audio: TfEncoder (the shared `SequenceEncoder`, ``block='torch'``) + adapters."""

    adapter: dict | None = None  # MixDomainAdapter fields

    @nn.compact
    def __call__(self, x_btf, mask_bt, *, train: bool) -> jax.Array:
        hidden = self.hidden_states(x_btf, mask_bt, train=train)
        ln = layer_norm("layernorm")  # one LayerNorm shared by spci and the adapter chain
        d = ln(hidden[0] + hidden[1])
        for n in range(self.num_layers - 1):
            if n:
                d = ln(d + hidden[n + 1])
            d = MixDomainAdapter(**(self.adapter or {}), name=f"adapter_{n}")(d, mask_bt, train=train)
        return jnp.concatenate([ln(hidden[-1]), d], axis=-1)


class TextAdapters(nn.Module):
    """The text ``UniEncoder`` after BERT: adapters on BERT hidden states; spci = last layer, no LN."""

    taps: tuple[int, ...]
    adapter: dict | None = None  # MixDomainAdapter fields

    @nn.compact
    def __call__(self, hidden: tuple, mask_bt, *, train: bool) -> jax.Array:
        ln = layer_norm("layernorm")
        d = hidden[0]
        for n, tap in enumerate(self.taps):
            d = ln(d + hidden[tap])
            d = MixDomainAdapter(**(self.adapter or {}), name=f"adapter_{n}")(d, mask_bt, train=train)
        return jnp.concatenate([hidden[-1], d], axis=-1)


class DyRoutBlock(nn.Module):
    """``DyRoutTrans_block``: LN1(src + DyRout(src, h_m, r)); LN2(+ self-attention); LN3(+ FFN); eps 1e-6."""

    hidden: int = 256
    ffn: int = 512
    heads: int = 8
    head_dim: int = 64
    dropout: float = 0.3  # cross-modal transformers only (hard-coded in the official block)
    mode: str = "official"

    @nn.compact
    def __call__(self, src, h: dict, ratio_bm, *, train: bool) -> jax.Array:
        c = [CrossTransformer(self.ffn, self.heads, self.head_dim, self.dropout, name=f"f_{m[0]}")(
             src, h[m], train=train) for m in MODALITIES]
        lns = [layer_norm(f"layernorm_{m[0]}") for m in MODALITIES]
        if ratio_bm is None:  # official evaluation path / 'none': LN_T, LN_V, LN_A unused
            if self.is_initializing():  # create their parameters: the training path uses them
                for ln, x in zip(lns, c):
                    ln(x)
            fused = c[0] + c[1] + c[2]
        elif self.mode == "official":  # Eq. in DyRout_block.forward: LN_m(c_m + r_m c_m)
            fused = sum(ln(x + ratio_bm[:, i, None, None] * x) for i, (ln, x) in enumerate(zip(lns, c)))
        elif self.mode == "attention":  # the official terms under modality attention softmax_m(log r_m) = r_m,
            # scaled by M so uniform ratios (k = 0) give the official sum back
            weight_bm = len(MODALITIES) * ratio_bm
            fused = sum(weight_bm[:, i, None, None] * ln(x + ratio_bm[:, i, None, None] * x)
                        for i, (ln, x) in enumerate(zip(lns, c)))
        else:  # 'paper': the ratio weights the normalised modality streams
            fused = sum(ratio_bm[:, i, None, None] * ln(x) for i, (ln, x) in enumerate(zip(lns, c)))
        src = layer_norm("norm1", 1e-6)(src + layer_norm("layernorm")(fused))
        src = layer_norm("norm2", 1e-6)(src + multi_h_atten(self.heads, self.head_dim, "mhatt2")(src, src, train=train))
        return layer_norm("norm3", 1e-6)(src + FeedForward(self.ffn, 0.0, name="ffn")(src, train=train))


class KuDA(nn.Module):
    bert: BertConfig
    text_len: int
    video_len: int
    audio_len: int
    stage: int = 2
    modality: str = "text"          # stage 1 only
    target: str = "unimodal"        # stage 1: 'unimodal' (label_<modality>) or 'multimodal' (label)
    taps: tuple[int, ...] = (3, 6, 9, 11)
    encoder_width: int = 128        # V/A TfEncoder width (proj_fea_dim)
    encoder_layers: int = 4
    encoder_heads: int = 8
    encoder_dropout: float = 0.2
    adapter_heads: int = 4
    adapter_layers: int = 2
    adapter_dropout: float = 0.1
    hidden: int = 256
    ffn: int = 512
    fusion_layers: int = 3
    heads: int = 8
    head_dim: int = 64
    fusion_dropout: float = 0.3
    ratio_mode: str = "official"
    ratio_k: float = 0.1            # OverallModal.py: calculate_ratio_senti(..., k=0.1)
    ratio_inference: str = "dynamic"  # 'attention' at inference: ratios from the unimodal predictions | 'fixed'
    clone_init: bool = True         # cloned blocks start identical (official deepcopy)
    fusion: str = "attention"       # 'attention' (DyRout blocks, official) | 'concat' | 'add'

    # ------------------------------------------------------------------ unimodal encoders (+ decoders)

    def _text(self, batch, *, train: bool):
        ids = _fit(batch["text_ids"], self.text_len, "text")
        mask = _fit(batch["text_mask"], self.text_len, "text")
        types = _fit(batch["text_type_ids"], self.text_len, "text")
        bert = BertModel(self.bert, name="bert")  # hidden states only: the pooler is never built (unused)
        _, hidden = bert.encode(bert.embed(ids, types, train=train), mask, train=train, return_all=True)
        return TextAdapters(self.taps, self._adapter, name="text_encoder")(hidden, mask, train=train)

    def _sequence(self, batch, m: str, *, train: bool):
        length = self.video_len if m == "video" else self.audio_len
        x, mask = _fit(batch[m], length, m), _fit(batch[f"{m}_mask"], length, m)
        enc = UniEncoder(self.encoder_width, self.encoder_heads, self.encoder_layers, self.encoder_dropout, "torch",
                         max_len=length, adapter=self._adapter, name=f"{m}_encoder")
        return enc(x, mask, train=train)

    @property
    def _adapter(self) -> dict:
        return {"heads": self.adapter_heads, "layers": self.adapter_layers, "dropout": self.adapter_dropout}

    def unimodal(self, batch, m: str, *, train: bool):
        """(U_m [B, L_m, 2P], u_m [B]) for modality ``m``."""
        u = self._text(batch, train=train) if m == "text" else self._sequence(batch, m, train=train)
        width = self.bert.hidden_size if m == "text" else self.encoder_width
        return u, Decoder(width, name=f"{m}_decoder")(u)

    # ------------------------------------------------------------------ fusion

    @nn.compact
    def __call__(self, batch: dict, *, train: bool = False) -> dict[str, Any]:
        if self.ratio_mode not in RATIO_MODES:
            raise ConfigError(f"config.model.ratio_mode={self.ratio_mode!r}: expected one of {list(RATIO_MODES)}")
        if self.ratio_inference not in RATIO_INFERENCE:
            raise ConfigError(f"config.model.ratio_inference={self.ratio_inference!r}: expected one of "
                              f"{list(RATIO_INFERENCE)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"config.model.fusion={self.fusion!r}: expected one of {list(FUSIONS)}")
        if self.fusion != "attention" and self.ratio_mode not in ("official", "none"):
            raise ConfigError(f"config.model.fusion={self.fusion!r} has no modality attention for "
                              f"ratio_mode={self.ratio_mode!r} to act on: use ratio_mode 'official' or 'none'")
        if self.stage == 1:
            return self._stage1(batch, train=train)
        feats, uni = {}, {}
        for m in MODALITIES:
            feats[m], uni[m] = self.unimodal(batch, m, train=train)
        h = {}
        for m in MODALITIES:  # h_m = len_m(dim_m(U_m)^T)^T: width, then time (over all L_m frames, pads too)
            x = Linear(self.hidden, name=f"dim_{m[0]}")(feats[m])
            h[m] = jnp.swapaxes(Linear(self.text_len, name=f"len_{m[0]}")(jnp.swapaxes(x, 1, 2)), 1, 2)
        n_blocks = self.fusion_layers if self.fusion == "attention" else 0
        blocks = [DyRoutBlock(self.hidden, self.ffn, self.heads, self.head_dim, self.fusion_dropout, self.ratio_mode,
                              name=f"block_{i}") for i in range(n_blocks)]
        head = SentiHead(name="head")
        uni_bm = jnp.stack([uni[m] for m in MODALITIES], axis=-1)

        def fuse(ratio_bm):
            if self.fusion == "concat":
                return Linear(self.hidden, name="concat_fusion")(jnp.concatenate([h[m] for m in MODALITIES], -1))
            src = h["text"] + h["video"] + h["audio"]
            for block in blocks:
                src = block(src, h, ratio_bm, train=train)
            return src

        out: dict[str, Any] = {}
        if self.fusion != "attention":
            ratio = None
        elif self.ratio_mode == "official" and (train or self.is_initializing()):
            ratio = sentiment_ratio(uni_bm, batch["label"].astype(uni_bm.dtype), self.ratio_k)  # ground truth
        elif self.ratio_mode == "paper":
            first = head(fuse(jnp.full_like(uni_bm, 1.0 / len(MODALITIES))))
            ratio = sentiment_ratio(uni_bm, jax.lax.stop_gradient(first), self.ratio_k)
            out["prediction_uniform"] = first
        elif self.ratio_mode == "attention":
            ratio = self._attention_ratio(uni_bm, batch, train=train)
        else:
            ratio = None
        src = fuse(ratio)
        valid = batch["valid"]
        nce_b = sum(cpc_nce(h[m], src, valid) for m in MODALITIES)  # nce_t + nce_v + nce_a
        out.update(prediction=head(src), embedding=src.mean(axis=1), unimodal_prediction=uni_bm, nce_b=nce_b)
        if ratio is not None:
            out["ratio"] = ratio
        return out

    def _attention_ratio(self, uni_bm, batch, *, train: bool) -> jax.Array:
        """'attention' ratios [B, M]: exp(-k (u_m - y)^2), normalised over modalities (the paper's ratio).

        Training: y = the label (as the official code). Inference (no label): ``'dynamic'``, y = the mean
        of the unimodal predictions (a modality that agrees with the others gets more weight);
        ``'fixed'``, uniform ratios 1/M whatever the unimodal predictions."""
        if train:
            return sentiment_ratio(uni_bm, batch["label"].astype(uni_bm.dtype), self.ratio_k)
        if self.ratio_inference == "fixed":
            return jnp.full_like(uni_bm, 1.0 / len(MODALITIES))
        return sentiment_ratio(uni_bm, uni_bm.mean(axis=-1), self.ratio_k)

    def _stage1(self, batch, *, train: bool) -> dict[str, Any]:
        if self.modality not in MODALITIES:
            raise ConfigError(f"config.model.modality={self.modality!r}: expected one of {list(MODALITIES)}")
        feats, u = self.unimodal(batch, self.modality, train=train)
        key = f"label_{self.modality}" if self.target == "unimodal" else "label"
        if key not in batch:
            if not self.is_initializing():
                raise ConfigError(f"KuDA stage 1 trains {self.modality} on '{key}', which this dataset lacks "
                                  "(MOSI/MOSEI have no unimodal labels): set config.stage1.target='multimodal' "
                                  "or config.stage1.enabled=False")
            target = jnp.zeros(u.shape, jnp.float32)
        else:
            target = batch[key].astype(jnp.float32)
        return {"prediction": u, "embedding": feats.mean(axis=1), "target": target}

    def init(self, rngs, *args, **kwargs):
        """Flax init; with ``clone_init`` the cloned blocks start identical, as ``copy.deepcopy`` does."""
        variables = super().init(rngs, *args, **kwargs)
        if self.clone_init:
            variables = {**variables, "params": tie_clones(variables["params"])}
        return variables


_CLONE = re.compile(r"^(block|adapter|layer)_(\d+)$")


def tie_clones(params: dict) -> dict:
    """Copy ``block_0``/``adapter_0``/``layer_0`` onto their numbered siblings (BERT excluded).

    The official code builds fusion blocks, adapters and encoder layers with ``copy.deepcopy`` of one
    module (``_get_clones``; ``nn.TransformerEncoder`` does the same), so they start with equal weights.
    """
    if not isinstance(params, dict):
        return params
    out = {k: (v if k == "bert" else tie_clones(v)) for k, v in params.items()}
    for k in list(out):
        m = _CLONE.match(k)
        if m and m.group(2) != "0" and f"{m.group(1)}_0" in out:
            out[k] = out[f"{m.group(1)}_0"]
    return out


# ------------------------------------------------------------------------------------------- loss

def loss_fn(outputs: dict, batch: dict, *, nce_weight: float = 0.1) -> tuple[jax.Array, dict]:
    """MSE(prediction, label) + nce_weight * NCE (stage 2); stage 1: MSE against the stage's ``target``
    (its unimodal label). Every mean is weighted by ``valid``."""
    valid = batch["valid"]
    pred = outputs["prediction"].astype(jnp.float32)
    target = outputs["target"] if "target" in outputs else batch["label"].astype(jnp.float32)
    mse = losses.weighted_mean(jnp.square(pred - target), valid)
    aux = {"mse": mse, "correct": (((pred > 0) == (target > 0)) * valid).sum()}
    loss = mse
    if "nce_b" in outputs:
        nce = losses.weighted_mean(outputs["nce_b"], valid)
        loss = mse + nce_weight * nce
        aux["nce"] = nce
    return loss, aux


def make_loss(config):
    """`loss_fn` with config.model.nce_weight (train.py: loss_re + 0.1 * nce_loss)."""
    return functools.partial(loss_fn, nce_weight=float(config.model.get("nce_weight", 0.1)))


def build(cfg, info: dict) -> KuDA:
    bert = info["bert"]
    taps = tuple(cfg.get("taps") or default_taps(bert.num_hidden_layers))
    if max(taps) > bert.num_hidden_layers:
        raise ConfigError(f"config.model.taps={taps}: the BERT has {bert.num_hidden_layers} layers")
    fields = ("stage", "modality", "target", "encoder_width", "encoder_layers", "encoder_heads", "encoder_dropout",
              "adapter_heads", "adapter_layers", "adapter_dropout", "hidden", "ffn", "fusion_layers", "heads",
              "head_dim", "fusion_dropout", "ratio_mode", "ratio_k", "ratio_inference", "clone_init", "fusion")
    return KuDA(bert=bert, text_len=cfg.text_len, video_len=cfg.video_len, audio_len=cfg.audio_len, taps=taps,
                **{f: cfg[f] for f in fields if f in cfg})


# The eval step returns the per-sample ratios ('paper', 'attention') and unimodal predictions, columns in
# MODALITIES order.
SPEC = registry.register(registry.ModelSpec(
    "kuda", build, make_loss, task="regression", eval_outputs=("ratio", "unimodal_prediction"),
    output_labels={"ratio": MODALITIES, "unimodal_prediction": MODALITIES}, result_keys={"ratio": "modality_weights"},
    analyses=("ratios",), stages=kuda_recipe.stages, added_fields={"model.fusion": "attention"}))

