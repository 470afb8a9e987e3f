"""`hct_dmg`: Hierarchical Crossmodal Transformer with Dynamic Modality Gating (Wang et al., arXiv 2305.13583).

There is no official code; this follows the paper's description (../shared/papers/hct_dmg.md):

    X_m --Conv1D--> GRU --> H_m [B, L_m, d]                        feature projection (local + global)
    g = softmax(w),  w in R^3 trainable (init 0)                    DMG: one weight per modality
    p = argmax(g)  (re-evaluated every batch; fixed by `primary` when dynamic_gating=False)
    A1, A2 = the other two modalities (in text, audio, video order)
    Z_1 = CT_1(H_A1 <- H_A2),  Z_2 = CT_2(H_A2 <- H_A1)            stage 1: auxiliaries enhance each other
    Y_1 = CT_3(H_p <- Z_1),    Y_2 = CT_4(H_p <- Z_2)              stage 2: the primary takes them in
    h   = Transformer_self([g_A1·Y_1 ; g_A2·Y_2])[last valid step]  weighted concatenation + self-attention
    out = residual head (as MulT)

The four crossmodal transformers and the self-attention are *roles* shared by every choice of the
primary, so the model has 4 crossmodal transformers + 1 memory (MulT: 6 + 3) and its size does
not depend on p. Our reading of points the paper leaves open: which pairs stage 1 fuses, that the
concatenation weights are the auxiliaries' gate probabilities, and that the GRU is unidirectional.

Settings shared with MulT (the paper reuses MulT's setup; models/mult.py): the self-attention has
``max(num_layers, mem_layers)`` layers (MulT's memory, ``get_network(layers=max(nlevels, 3))``), and
a crossmodal transformer's attention dropout is the one of its *source* modality (MulT's
``get_network``: text ``attn_dropout``, audio/video ``attn_dropout_audio``/``_video``); the source of
CT_3/CT_4 is Z_1/Z_2, i.e. A1/A2 enhanced, so theirs is A1's/A2's; the self-attention uses the text one,
as MulT's memories. The rate follows the modality, not the role: each primary's branch passes its own.

The gate's learning signal. The primary index p = argmax(w) is piecewise constant (zero gradient) and
``nn.switch`` passes none through its index, so w learns only through the concatenation weights:
with h_j = g_j·Y_j for the two auxiliaries j in {A1, A2} and s_j = <dL/dh_j, Y_j> (summed over batch,
time and features),

    dL/dw_k = sum_j s_j g_j (delta_jk - g_k)           (softmax Jacobian)

so an auxiliary's logit moves by how much scaling its fused stream up would lower the loss, and the
primary's own logit only through the normalisation (dL/dw_p = -g_p sum_j s_j g_j): nothing tells the
model which modality *should* be primary; p changes when one logit overtakes another as a side
effect. The signal is weak (the layers after h can absorb a scale), but Adam moves each logit by
about lr per step whatever its gradient's size, so p can flip late in training. The paper's
"modality gating freezing mechanism" (the gate frozen after convergence) is this model's stage
recipe, `stages` (config ``gate_freeze``).

One compiled program for every primary: ``nn.switch`` (lifted ``lax.switch``) on p, with one
branch per primary that calls the same shared modules on permuted inputs. Only the chosen branch
runs (weighted selection would run all three); every branch returns the same [B, 2d] shape, so
the branch outputs need no padding. ``primary=`` in ``__call__`` runs one branch eagerly (tests
compare it with the switched program). Where the gate cannot change (the ``frozen_gate`` stage,
evaluation, prediction), `specialise` builds the programs with the gate's primary fixed: one branch,
no switch (the switch's backward keeps every branch's residuals and its compile handles all three).
"""
from __future__ import annotations

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax import losses, registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.crossmodal import CrossmodalTransformer, last_valid
from mmfuse_jax.models._affect import AffectHead, TemporalProjection, TextInput, modality_inputs, model_fields

MODALITIES = ("text", "audio", "video")


class RoleTransformer(nn.Module):
    """A `CrossmodalTransformer` whose attention dropout is given per call (a Python float): one set of
    parameters for a role shared by every primary, with the dropout of the modality that fills it."""

    num_heads: int
    num_layers: int
    relu_dropout: float
    res_dropout: float
    embed_dropout: float
    use_future_mask: bool

    @nn.compact
    def __call__(self, x_btd, mask_bt, src_bsd=None, src_mask_bs=None, *, attn_dropout: float, train: bool):
        # The same name in every call, so every rate reads the same parameters.
        return CrossmodalTransformer(self.num_heads, self.num_layers, attn_dropout, self.relu_dropout,
                                     self.res_dropout, self.embed_dropout, self.use_future_mask,
                                     name="transformer")(x_btd, mask_bt, src_bsd, src_mask_bs, train=train)


class HCTDMG(nn.Module):
    num_classes: int
    output: str = "classification"        # 'classification' | 'regression' | 'emotion'
    dim: int = 40
    num_heads: int = 8
    num_layers: int = 4                   # layers of each crossmodal transformer
    mem_layers: int = 3                   # the self-attention has max(num_layers, mem_layers) layers, as MulT
    conv_kernel: tuple[int, int, int] = (1, 3, 3)  # text, audio, video
    attn_dropout: float = 0.1             # source text (and the self-attention), as MulT
    attn_dropout_audio: float = 0.1       # source audio (MulT: 0)
    attn_dropout_video: float = 0.1       # source video (MulT: 0)
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.25
    out_dropout: float = 0.0
    use_future_mask: bool = True
    dynamic_gating: bool = True           # False: the ablation with a fixed primary
    primary: str = "text"                 # the fixed primary when dynamic_gating is False
    text_vocab_size: int = 0
    text_embed_dim: int = 300

    def setup(self):
        if self.primary not in MODALITIES:
            raise ValueError(f"model.primary={self.primary!r}: expected one of {MODALITIES}")
        self.text_input = TextInput(self.text_vocab_size, self.text_embed_dim)
        self.text_dropout = nn.Dropout(self.embed_dropout)  # on the raw text input, as MulT
        kernels = dict(zip(MODALITIES, self.conv_kernel))
        self.proj = {m: TemporalProjection(self.dim, kernels[m]) for m in MODALITIES}
        self.gru = {m: nn.RNN(nn.GRUCell(self.dim)) for m in MODALITIES}
        # Eq. (DMG): one trainable weight per modality; equal at the start.
        self.gate_logits = self.param("gate_logits", nn.initializers.zeros, (len(MODALITIES),))
        ct = lambda layers: RoleTransformer(self.num_heads, layers, self.relu_dropout, self.res_dropout,
                                            self.embed_dropout, self.use_future_mask)
        self.stage1_a, self.stage1_b = ct(self.num_layers), ct(self.num_layers)
        self.stage2_a, self.stage2_b = ct(self.num_layers), ct(self.num_layers)
        self.self_attention = ct(max(self.num_layers, self.mem_layers))
        self.head = AffectHead(self.num_classes, self.output, self.out_dropout)

    def project(self, batch: dict, *, train: bool) -> tuple:
        """Conv1D + GRU per modality -> ((H_text, mask), (H_audio, mask), (H_video, mask))."""
        feats = modality_inputs(batch, self.text_input)
        x_t, m_t = feats["text"]
        feats["text"] = (self.text_dropout(x_t, deterministic=not train), m_t)
        out = []
        for m in MODALITIES:
            x, mask = feats[m]
            h = self.gru[m](self.proj[m](x, mask), seq_lengths=mask.astype(jnp.int32).sum(1))
            out.append((h * mask[..., None].astype(h.dtype), mask))
        return tuple(out)

    def fuse(self, feats: tuple, gate: jax.Array, primary: int, *, train: bool) -> jax.Array:
        """Stages 1 and 2, weighted concatenation and self-attention for a (Python int) primary -> [B, 2d]."""
        a1, a2 = (m for m in range(len(MODALITIES)) if m != primary)
        (h_p, m_p), (h_1, m_1), (h_2, m_2) = feats[primary], feats[a1], feats[a2]
        rate = (self.attn_dropout, self.attn_dropout_audio, self.attn_dropout_video)  # by source modality
        z_1 = self.stage1_a(h_1, m_1, h_2, m_2, attn_dropout=rate[a2], train=train)
        z_2 = self.stage1_b(h_2, m_2, h_1, m_1, attn_dropout=rate[a1], train=train)
        y_1 = self.stage2_a(h_p, m_p, z_1, m_1, attn_dropout=rate[a1], train=train)
        y_2 = self.stage2_b(h_p, m_p, z_2, m_2, attn_dropout=rate[a2], train=train)
        h = jnp.concatenate([gate[a1] * y_1, gate[a2] * y_2], axis=-1)
        return last_valid(self.self_attention(h, m_p, attn_dropout=self.attn_dropout, train=train), m_p)

    def __call__(self, batch: dict, *, train: bool = False, primary: int | None = None) -> dict:
        feats = self.project(batch, train=train)
        gate = jax.nn.softmax(self.gate_logits.astype(jnp.float32)).astype(feats[0][0].dtype)
        if primary is None and not self.dynamic_gating:
            primary = MODALITIES.index(self.primary)
        if primary is not None:  # a fixed (or, in tests, an eagerly chosen) primary: one branch
            index = jnp.asarray(primary, jnp.int32)
            h = self.fuse(feats, gate, primary, train=train)
        else:
            index = jnp.argmax(self.gate_logits).astype(jnp.int32)
            branches = [lambda mdl, f, g, p=p: mdl.fuse(f, g, p, train=train) for p in range(len(MODALITIES))]
            if self.is_initializing():  # every branch creates the same (shared) parameters
                for branch in branches:
                    branch(self, feats, gate)
            h = nn.switch(index, branches, self, feats, gate)
        out = self.head(h, train=train)
        return {**out, "gate": gate, "primary": index}


def build(cfg, info: dict) -> HCTDMG:
    return HCTDMG(**model_fields(HCTDMG, cfg, info))


def specialise(model: HCTDMG, fixed) -> HCTDMG:
    """A fixed gate (the ``frozen_gate`` stage, evaluation, prediction) fixes p = argmax(w) too: the model
    with that primary (``dynamic_gating=False``) computes the same outputs with one branch where
    ``nn.switch`` compiles and linearizes all three and keeps every branch's residuals. Measured in
    `benchmarks/step_compile.py --compare=specialise`; the run's config.json keeps the dynamic gate."""
    gate = fixed("gate_logits")
    if not model.dynamic_gating or gate is None:
        return model
    return model.clone(dynamic_gating=False, primary=MODALITIES[int(np.argmax(gate))])


def loss_fn(outputs: dict, batch: dict):
    """`losses.affect_loss`, plus the gate probabilities in aux (summed per log step by the loop)."""
    loss, aux = losses.affect_loss(outputs, batch)
    gate = jax.lax.stop_gradient(outputs["gate"]).astype(jnp.float32)
    return loss, {**aux, **{f"gate_{m}": gate[i] for i, m in enumerate(MODALITIES)}}


# ------------------------------------------------------------------------------------------- stages

# The gate's parameter path (top level: '/'-joined, as `state.make_optimizer` matches it).
FROZEN_GATE = (r"^gate_logits$",)
CRITERIA = ("early_stop", "epoch")


def _learn_gate_config(config):
    """Stage 1: the gate learns. 'early_stop': the run's epochs and patience (it ends at its own early
    stop, "after convergence"); 'epoch': exactly ``gate_freeze.epoch`` epochs (no early stop)."""
    g, c = config.gate_freeze, copy.deepcopy(config)
    if g.criterion == "epoch":
        c.num_epochs = c.patience = int(g.epoch)
    return c


def _frozen_gate_config(config):
    """Stage 2: ``gate_freeze.epochs`` epochs (0: the run's ``num_epochs``), the run's patience."""
    c = copy.deepcopy(config)
    c.num_epochs = int(config.gate_freeze.epochs) or config.num_epochs
    return c


def stages(config) -> list[registry.Stage]:
    """HCT-DMG's recipe: the paper's "modality gating freezing mechanism" (gate weights frozen after
    convergence), when ``gate_freeze.enabled`` (the default, as the paper):

      ``learn_gate``   everything trains, the gate included (`_learn_gate_config`: until stage 1's early
                       stop, or exactly ``gate_freeze.epoch`` epochs);
      ``frozen_gate``  starts from stage 1's ``gate_freeze.select`` checkpoint ('best' dev epoch or 'last'),
                       all params, and trains on with ``gate_logits`` frozen (`FROZEN_GATE`: no update, no
                       weight decay), so the primary modality and the concatenation weights stay fixed.

    Stage 2 starts a fresh optimizer state (Adam moments at zero, step 0) and a fresh learning-rate
    schedule over its own epochs (for the affect presets: linear decay from ``optimizer.lr`` again); only
    the parameters carry over. Evaluation reads stage 2. ``gate_freeze.enabled=False``: one stage in
    the workdir itself with a gate that learns throughout (continuous gating), as is a config without
    a ``gate_freeze`` block (one written before the recipe existed).
    """
    g = config.get("gate_freeze")
    if g is None:
        return [registry.Stage()]
    if g.criterion not in CRITERIA:
        raise ConfigError(f"config.gate_freeze.criterion={g.criterion!r}: expected one of {CRITERIA}")
    if g.select not in ("best", "last"):
        raise ConfigError(f"config.gate_freeze.select={g.select!r}: expected 'best' or 'last'")
    if g.criterion == "epoch" and int(g.epoch) < 1:
        raise ConfigError(f"config.gate_freeze.epoch={g.epoch!r}: criterion 'epoch' needs the number of "
                          "epochs the gate learns (>= 1)")
    if not g.enabled:
        return [registry.Stage()]
    return [registry.Stage("learn_gate", _learn_gate_config, select=g.select),
            registry.Stage("frozen_gate", _frozen_gate_config, warm_start=("learn_gate",), frozen=FROZEN_GATE)]


SPEC = registry.register(registry.ModelSpec("hct_dmg", build, registry.fixed_loss(loss_fn), uses_bert=False,
                                            analyses=("gates", "embeddings"), output_labels={"gate": MODALITIES},
                                            stages=stages, specialise=specialise))
