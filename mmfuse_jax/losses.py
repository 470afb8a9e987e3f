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


def classification_loss(outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
    """Cross-entropy on ``outputs['logits']``; aux: loss and number of correct valid rows."""
    logits = outputs["logits"]
    loss = cross_entropy(logits, batch["label"], batch["valid"])
    correct = ((logits.argmax(-1) == batch["label"]) * batch["valid"]).sum()
    return loss, {"ce": loss, "correct": correct}
