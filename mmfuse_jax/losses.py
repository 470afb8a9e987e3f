"""Loss functions. Every reduction is weighted by ``valid`` so padding rows never count."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def weighted_mean(values_b: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Mean of ``values_b`` over rows with valid = 1 (0 when no row is valid)."""
    valid_b = valid_b.astype(jnp.float32)
    return (values_b.astype(jnp.float32) * valid_b).sum() / jnp.maximum(valid_b.sum(), 1.0)


def cross_entropy(logits_bc: jax.Array, labels_b: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Softmax cross-entropy in float32, averaged over valid rows."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_bc.astype(jnp.float32), labels_b)
    return weighted_mean(ce, valid_b)


def outlier_exposure_loss(logits_bc: jax.Array, is_oos_b: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Mean over valid OOS rows of CE(uniform over C, softmax(logits)) = -(1/C)·Σ_c log softmax_c.

    logits_bc float [B, C]; is_oos_b, valid_b [B] (bool or 0/1). 0 when the batch has no OOS row.
    """
    ce_uniform_b = -jax.nn.log_softmax(logits_bc.astype(jnp.float32), axis=-1).mean(axis=-1)
    return weighted_mean(ce_uniform_b, valid_b.astype(jnp.float32) * is_oos_b.astype(jnp.float32))


def open_set_cross_entropy(logits_bc: jax.Array, labels_b: jax.Array, valid_b: jax.Array, *,
                           oe_weight: float = 1.0) -> tuple[jax.Array, dict]:
    """CE over valid known rows + oe_weight · outlier exposure over valid OOS rows (label >= C).

    thuiar/MIntRec2.0 ``*_ood`` managers add the mean CE of an in-scope batch and the mean outlier
    exposure loss of an OOS batch (weight 1); in one mixed batch each term is the mean over its own
    rows, which keeps that 1:1 weighting. Without OOS rows this is plain cross-entropy.
    Returns (loss, {'ce', 'oe', 'correct'}), 'correct' counting known rows only.
    """
    c = logits_bc.shape[-1]
    is_oos = labels_b >= c
    # Label C indexes no logit: optax would return NaN there, and NaN * 0 weight is still NaN.
    known_labels = jnp.where(is_oos, 0, labels_b)
    valid = valid_b.astype(jnp.float32)
    ce = cross_entropy(logits_bc, known_labels, valid * (1.0 - is_oos))
    oe = outlier_exposure_loss(logits_bc, is_oos, valid)
    correct = ((logits_bc.argmax(-1) == labels_b) * valid).sum()
    return ce + oe_weight * oe, {"ce": ce, "oe": oe, "correct": correct}


def classification_loss(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
    """Cross-entropy on ``outputs['logits']`` (+ outlier exposure on OOS rows, label >= C, if any);
    aux: the terms and the number of correct valid rows."""
    return open_set_cross_entropy(outputs["logits"], batch["label"], batch["valid"])


# ----------------------------------------------------------------------------- affect (MulT family)

def l1_loss(pred_b: jax.Array, target_b: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Mean absolute error over valid rows (MulT's ``nn.L1Loss`` for MOSI/MOSEI)."""
    return weighted_mean(jnp.abs(pred_b.astype(jnp.float32) - target_b.astype(jnp.float32)), valid_b)


def mse_loss(pred_b: jax.Array, target_b: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Mean squared error over valid rows."""
    return weighted_mean(jnp.square(pred_b.astype(jnp.float32) - target_b.astype(jnp.float32)), valid_b)


def emotion_cross_entropy(logits_bkc: jax.Array, labels_bk: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Cross-entropy per (example, emotion), averaged over the valid examples' B·K entries.

    MulT on IEMOCAP: ``CrossEntropyLoss(preds.view(-1, 2), labels.view(-1))`` with logits [B, 4, 2].
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_bkc.astype(jnp.float32), labels_bk)
    return weighted_mean(ce.mean(-1), valid_b)


def affect_loss(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
    """The MulT criterion for the output kind: L1 on ``prediction`` (regression), per-emotion CE on
    3-D ``logits`` (IEMOCAP), CE otherwise. aux ``correct``: sign agreement (truth >= 0 vs
    prediction >= 0) for regression, the fraction of emotions right per row for IEMOCAP."""
    valid = batch["valid"]
    if "prediction" in outputs:
        pred, label = outputs["prediction"], batch["label"]
        loss = l1_loss(pred, label, valid)
        correct = (((pred >= 0) == (label >= 0)) * valid).sum()
        return loss, {"l1": loss, "correct": correct}
    logits = outputs["logits"]
    if logits.ndim == 3:
        loss = emotion_cross_entropy(logits, batch["label"], valid)
        correct = ((logits.argmax(-1) == batch["label"]).mean(-1) * valid).sum()
        return loss, {"ce": loss, "correct": correct}
    return classification_loss(outputs, batch)


# ----------------------------------------------------------------------------- contrastive (MVCL-DAF++)

_EXCLUDED_LOGIT = -1e9  # a candidate left out of a softmax: exp(-1e9 - max) == 0, and no inf - inf


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
    """x / max(|x|, eps) in float32. A zero vector stays zero and its gradient stays finite (1/eps),
    unlike x / |x|, whose gradient at 0 is NaN."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps * eps))


def prototype_contrastive_loss(emb_bd: jax.Array, labels_b: jax.Array, valid_b: jax.Array, num_classes: int,
                               temperature: float | jax.Array = 0.1) -> jax.Array:
    """Prototype-aware contrastive loss (MVCL-DAF++): each embedding against the batch's class prototypes.

    z_i = e_i / |e_i| over the rows that count (valid, label in [0, C)); for each class c present
    among them p_c = mean_{i: y_i = c} z_i, and
        loss_i = -log( exp(cos(z_i, p_{y_i}) / τ) / Σ_{c present} exp(cos(z_i, p_c) / τ) ),
    averaged over the rows that count. Classes absent from the batch are no candidates; rows with an
    out-of-scope label (>= C) or valid = 0 neither count nor shape a prototype. A batch without such
    rows gives 0; a batch with one class gives 0 (one candidate); identical embeddings give log(#present).
    emb_bd float [B, D]; labels_b int [B]; valid_b [B]. Returns a float32 scalar.
    """
    z = l2_normalize(emb_bd)
    counts_b = valid_b.astype(jnp.float32) * (labels_b >= 0) * (labels_b < num_classes)
    onehot_bc = jax.nn.one_hot(jnp.clip(labels_b, 0, num_classes - 1), num_classes, dtype=jnp.float32)
    members_bc = onehot_bc * counts_b[:, None]
    size_c = members_bc.sum(0)
    protos_cd = l2_normalize(members_bc.T @ z / jnp.maximum(size_c, 1.0)[:, None])
    logits_bc = jnp.where(size_c[None, :] > 0, z @ protos_cd.T / temperature, _EXCLUDED_LOGIT)
    nll_b = -(jax.nn.log_softmax(logits_bc, axis=-1) * onehot_bc).sum(-1)
    return weighted_mean(jnp.where(counts_b > 0, nll_b, 0.0), counts_b)


def info_nce(query_bd: jax.Array, key_bd: jax.Array, valid_b: jax.Array,
             temperature: float | jax.Array = 0.1) -> jax.Array:
    """InfoNCE with the batch as negatives (info-nce-pytorch's ``negative_mode='unpaired'`` without
    explicit negatives, as MVCL-DAF uses it): row i's positive is key i, its negatives the other
    valid keys; logits are cosine similarities / τ. Mean over valid rows; 0 without valid rows."""
    q, k = l2_normalize(query_bd), l2_normalize(key_bd)
    logits_bb = jnp.where(valid_b[None, :] > 0, q @ k.T / temperature, _EXCLUDED_LOGIT)
    nll_b = -jnp.diagonal(jax.nn.log_softmax(logits_bb, axis=-1))
    return weighted_mean(jnp.where(valid_b > 0, nll_b, 0.0), valid_b)


def multiview_contrastive_loss(anchor_bd: jax.Array, views_bvd: jax.Array, valid_b: jax.Array,
                               temperature: float | jax.Array = 0.1) -> jax.Array:
    """Text-anchored multi-view contrastive loss (MVCL-DAF): the mean over the V views of
    `info_nce`(anchor, view). anchor_bd [B, D]; views_bvd [B, V, D]; valid_b [B] (0 = row ignored)."""
    terms = [info_nce(anchor_bd, views_bvd[:, v], valid_b, temperature) for v in range(views_bvd.shape[1])]
    return jnp.mean(jnp.stack(terms))
