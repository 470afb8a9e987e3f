"""Train state and optimizer (AdamW, linear warmup + linear decay, global-norm clipping)."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; per-step dropout keys are fold_in(rng, step)
    nonfinite: jax.Array  # count of skipped non-finite steps


def _decay_mask(params):
    # BERT convention (and thuiar's optimizers): no weight decay on biases and LayerNorm scales.
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {k: not (k[-1] == "bias" or k[-1] == "scale" or "LayerNorm" in k) for k in flat})


def learning_rate_schedule(opt, total_steps: int) -> optax.Schedule:
    """Linear warmup over ``warmup_ratio`` of training, then linear decay to 0 (transformers'
    ``get_linear_schedule_with_warmup``, used by the MIntRec baselines)."""
    warmup = int(total_steps * opt.warmup_ratio)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, opt.lr, max(warmup, 1)),
         optax.linear_schedule(opt.lr, 0.0, max(total_steps - warmup, 1))], [max(warmup, 1)])


def make_optimizer(opt, total_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(opt, total_steps)
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip) if opt.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                    mask=_decay_mask))


def create(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(seed), nonfinite=jnp.zeros((), jnp.int32))
