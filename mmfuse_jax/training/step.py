"""The one train step and eval step for every registered model.

Both are jit-compiled with explicit shardings (the state as `sharding.tree_shardings` lays it
out: replicated, or FSDP-style on the ``model`` axis; the batch on ``data``) and the state buffers
donated. A step whose loss or gradient is not finite leaves params and optimizer
state unchanged and increments ``state.nonfinite``; the loop decides (config.nonfinite_policy)
whether that stops the run. `TraceCounter` counts compilations so tests can check that the
count stays at the number of length buckets.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from mmfuse_jax.training import sharding
from mmfuse_jax.training.state import TrainState


class TraceCounter:
    """Counts how many times a function body is traced (= compiled, for a jitted function)."""

    def __init__(self):
        self.count = 0

    def wrap(self, fn: Callable) -> Callable:
        def traced(*args, **kwargs):
            self.count += 1
            return fn(*args, **kwargs)
        return traced


def _cast_inputs(batch: dict, dtype) -> dict:
    return {k: (v.astype(dtype) if k in ("audio", "video", "text") else v) for k, v in batch.items()}


def _cast_params(params, dtype):
    """Mixed precision: float32 master params, cast to ``dtype`` for the forward/backward pass.

    Gradients come back in float32 through the cast; the optimizer state stays float32. Layers
    keep their numerically sensitive parts in float32 themselves (FFT convolutions, attention
    softmax, LayerNorm statistics, losses).
    """
    if dtype == jnp.float32:
        return params
    return jax.tree_util.tree_map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                                  params)


def make_train_step(model, loss_fn, tx: optax.GradientTransformation, mesh, *,
                    compute_dtype=jnp.float32, counter: TraceCounter | None = None, state_sharding=None):
    """``state_sharding``: a sharding (or a tree of them matching the TrainState) for the state in
    and out; default replicated."""
    def train_step(state: TrainState, batch: dict):
        rng = jax.random.fold_in(state.rng, state.step)

        def objective(params):
            out = model.apply({"params": _cast_params(params, compute_dtype)}, _cast_inputs(batch, compute_dtype),
                              train=True,
                              rngs={"dropout": rng})
            return loss_fn(out, batch)

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A select per leaf needs the old and the new value of every parameter and moment at once (a
        # model-sized temporary). `lax.cond(ok, update, keep)` avoids it (the AdamW update of a 22.7 M
        # parameter BERT 60 -> 45 ms, benchmarks/text_step_profile.py) but changes the update's float
        # rounding in some models (MVCL-DAF++'s tiny learning test: test acc 0.823 -> 0.771), so every
        # measured number would move; not adopted until a change re-measures them.
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                                  opt_state=keep(opt_state, state.opt_state),
                                  nonfinite=state.nonfinite + (~ok).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "count": batch["valid"].sum(), **aux}
        return new_state, metrics

    fn = counter.wrap(train_step) if counter else train_step
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    state_sharding = rep if state_sharding is None else state_sharding
    return jax.jit(fn, in_shardings=(state_sharding, data), out_shardings=(state_sharding, rep),
                   donate_argnums=(0,))


# Model outputs every eval step returns; a spec adds its own (`registry.ModelSpec.eval_outputs`).
# The others (e.g. a loss's inputs) stay on the device.
EVAL_OUTPUTS = ("logits", "prediction", "embedding")


def make_eval_step(model, mesh, *, compute_dtype=jnp.float32, counter: TraceCounter | None = None,
                   params_sharding=None, extra_outputs: tuple[str, ...] = ()):
    """``params_sharding``: a sharding or tree of them; default (None) the params' own layout, so
    replicated and FSDP-sharded params both work. ``extra_outputs``: the spec's ``eval_outputs``,
    returned beside `EVAL_OUTPUTS` when the model emits them. Outputs come back replicated."""
    keep = set(EVAL_OUTPUTS) | set(extra_outputs)

    def eval_step(params, batch: dict):
        out = model.apply({"params": _cast_params(params, compute_dtype)}, _cast_inputs(batch, compute_dtype),
                          train=False)
        return {k: v.astype(jnp.float32) for k, v in out.items() if k in keep}

    fn = counter.wrap(eval_step) if counter else eval_step
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(fn, in_shardings=(params_sharding, data), out_shardings=rep)
