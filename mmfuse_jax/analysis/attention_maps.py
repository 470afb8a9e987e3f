"""Crossmodal attention maps of a batch and KL divergences between attention distributions.

A library helper (not a run-report analysis): the experiments (HCT-DMG vs MulT attention distortion on
congruent vs incongruent examples) call it on a model and its params. The maps come from the
``'attention'`` collection every `layers.attention.MultiHeadAttention` sows into when asked
(`layers.attention.ATTENTION_COLLECTION`); a normal apply computes none of them.

HCT-DMG with dynamic gating picks its primary modality inside ``nn.switch``, whose branches would sow maps
of different shapes; the maps are taken with the primary the model would pick, argmax(gate_logits), passed
explicitly (`models.hct_dmg.HCTDMG.__call__`'s ``primary``), which computes the same forward.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.attention import ATTENTION_COLLECTION


def attention_maps(module, params: dict, batch: dict, *, kind: str = "cross_attention") -> dict[str, jax.Array]:
    """{'<module path>': probs [B, H, T, S]} of every attention of ``kind`` ('cross_attention' or
    'self_attention') in one evaluation-mode forward of ``batch``. A module called more than once
    gets one entry per call, '<path>#<i>'."""
    if kind not in ("cross_attention", "self_attention"):
        raise ValueError(f"kind={kind!r}: expected 'cross_attention' or 'self_attention'")
    kwargs = {}
    if getattr(module, "dynamic_gating", False) and "gate_logits" in params:
        kwargs["primary"] = int(np.argmax(np.asarray(params["gate_logits"])))
    _, state = module.apply({"params": params}, batch, train=False, mutable=[ATTENTION_COLLECTION], **kwargs)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state.get(ATTENTION_COLLECTION, {})))
    out = {}
    for path, sown in sorted(flat.items()):
        if path[-1] != kind:
            continue
        name = "/".join(path[:-1])
        for i, probs in enumerate(sown):
            out[name if len(sown) == 1 else f"{name}#{i}"] = probs
    return out


def attention_kl(p: jax.Array, q: jax.Array, *, eps: float = 1e-12) -> jax.Array:
    """KL(p || q) = sum_s p_s (log p_s - log q_s) over the last axis (keys) -> p.shape[:-1].

    Terms with p_s = 0 are 0 (0 log 0 = 0); q is floored at ``eps`` where p > 0 (a finite, large value
    instead of +inf when q puts no mass where p does)."""
    p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
    if p.shape != q.shape:
        raise ValueError(f"attention_kl: p has shape {p.shape}, q has {q.shape}; they must match")
    terms = jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(jnp.maximum(q, eps))), 0.0)
    return terms.sum(-1)


def per_example_kl(p_bhts: jax.Array, q_bhts: jax.Array, query_mask_bt: jax.Array | None = None) -> jax.Array:
    """Mean of KL(p || q) over heads and (valid) query positions -> [B]: one number per example."""
    kl_bht = attention_kl(p_bhts, q_bhts).mean(axis=1)
    if query_mask_bt is None:
        return kl_bht.mean(-1)
    w = jnp.asarray(query_mask_bt, jnp.float32)
    return (kl_bht * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)
