"""The one train step and eval step for every registered model.

Both are jit-compiled with explicit shardings (the state as `sharding.tree_shardings` lays it
out: replicated, or FSDP-style on the ``model`` axis; the batch on ``data``) and the state buffers
donated. A step whose loss or gradient is not finite leaves params and optimizer
state unchanged and increments ``state.nonfinite``; the loop decides (config.nonfinite_policy)
whether that stops the run. `TraceCounter` counts compilations so tests can check that the
count stays at the number of length buckets.
"""
from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import grouped_update, sharding
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


# ----------------------------------------------------------------------------- per-process memo

# Jitted functions (and the shapes a trace gives) kept per process by what fixes their program: the
# model (a hashable Flax dataclass: equal fields, equal program), the mesh, dtypes, shardings. A jitted
# function keeps its traces and executables, so the loop's eval step, every later evaluation (eval.py's
# splits and perturbations, an experiment's runs and seeds of one model) and every init of that model
# trace and compile once: tracing a model is seconds of Python (HCT-DMG traces all three primaries'
# branches), and a new closure per call would trace again even when the persistent XLA cache has the
# executable. Least recently used entries go beyond `_MEMO_SIZE`.
_MEMO: collections.OrderedDict = collections.OrderedDict()
_MEMO_SIZE = 32
_MEMO_LOCK = threading.Lock()


def memo(key: tuple, build: Callable[[], Any]) -> Any:
    """``build()``, once per ``key`` in this process. A key that cannot be hashed (a model with a list or
    array field) builds every time: correct, only slower."""
    try:
        hash(key)
    except TypeError:
        return build()
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    value = build()
    with _MEMO_LOCK:
        _MEMO[key] = value
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return value


def memo_items() -> list[tuple[tuple, Any]]:
    """The (key, value) pairs `memo` holds now, least recently used first."""
    with _MEMO_LOCK:
        return list(_MEMO.items())


def memo_clear() -> None:
    """Forget every memoised function (tests that count a run's own compiles)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def sharding_key(tree: Any) -> Any:
    """A hashable stand-in for a sharding or a tree of them (None stays None)."""
    if tree is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(leaves)


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


def compiler_options(config) -> dict | None:
    """``config.compiler_options`` as jax.jit takes them (None: JAX's defaults), checked by XLA once per
    process on a trivial program, so an unknown option or value is a ConfigError before any step."""
    from mmfuse_jax.validation import parse_compiler_options

    options = parse_compiler_options(config.get("compiler_options", "")) or None
    if options:
        _check_options(_options_key(options))
    return options


def _options_key(options) -> tuple:
    return tuple(sorted((options or {}).items()))


@functools.cache
def _check_options(key: tuple) -> None:
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(key)).lower(jnp.zeros(())).compile()
    except Exception as e:  # XLA's INVALID_ARGUMENT for an unknown option or a value of the wrong type
        raise ConfigError(f"config.compiler_options: XLA refused {dict(key)}: {str(e).splitlines()[0][:200]}") from e


def make_train_step(model, loss_fn, tx: optax.GradientTransformation, mesh, *,
                    compute_dtype=jnp.float32, counter: TraceCounter | None = None, state_sharding=None,
                    options: dict | None = None, update: grouped_update.Update | None = None):
    """``state_sharding``: a sharding (or a tree of them matching the TrainState) for the state in
    and out; default replicated. ``options``: XLA compiler options (`compiler_options`). ``update``: how
    the gradients change the params and ``tx``'s state (`state.make_update`); default optax's per-leaf
    update of ``tx``."""
    update = grouped_update.per_leaf(tx) if update is None else update

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
        params, opt_state = update(grads, state.opt_state, state.params, ok)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  nonfinite=state.nonfinite + (~ok).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "count": batch["valid"].sum(), **aux}
        return new_state, metrics

    fn = counter.wrap(train_step) if counter else train_step
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    state_sharding = rep if state_sharding is None else state_sharding
    return jax.jit(fn, in_shardings=(state_sharding, data), out_shardings=(state_sharding, rep),
                   donate_argnums=(0,), compiler_options=options)


# Model outputs every eval step returns; a spec adds its own (`registry.ModelSpec.eval_outputs`).
# The others (e.g. a loss's inputs) stay on the device.
EVAL_OUTPUTS = ("logits", "prediction", "embedding")


def make_eval_step(model, mesh, *, compute_dtype=jnp.float32, counter: TraceCounter | None = None,
                   params_sharding=None, extra_outputs: tuple[str, ...] = (), options: dict | None = None):
    """``params_sharding``: a sharding or tree of them; default (None) the params' own layout, so
    replicated and FSDP-sharded params both work. ``extra_outputs``: the spec's ``eval_outputs``,
    returned beside `EVAL_OUTPUTS` when the model emits them. Outputs come back replicated.
    ``options``: XLA compiler options (`compiler_options`).

    Without a ``counter``, one jitted function per (model, mesh, dtype, layout, outputs) in the process
    (`memo`): evaluations of the same model reuse its traces and executables."""
    if counter is not None:
        return _eval_step(model, mesh, compute_dtype, counter, params_sharding, tuple(extra_outputs), options)
    key = ("eval_step", model, mesh, jnp.dtype(compute_dtype).name, sharding_key(params_sharding),
           tuple(extra_outputs), _options_key(options))
    return memo(key, lambda: _eval_step(model, mesh, compute_dtype, None, params_sharding, tuple(extra_outputs),
                                        options))


def _eval_step(model, mesh, compute_dtype, counter, params_sharding, extra_outputs, options):
    keep = set(EVAL_OUTPUTS) | set(extra_outputs)

    def eval_step(params, batch: dict):
        out = model.apply({"params": _cast_params(params, compute_dtype)}, _cast_inputs(batch, compute_dtype),
                          train=False)
        return {k: v.astype(jnp.float32) for k, v in out.items() if k in keep}

    fn = counter.wrap(eval_step) if counter else eval_step
    rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(fn, in_shardings=(params_sharding, data), out_shardings=rep, compiler_options=options)
