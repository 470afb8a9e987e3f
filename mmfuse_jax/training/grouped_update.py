"""The train step's optimizer update over a few concatenated vectors instead of array by array.

Leaf by leaf (`per_leaf`, optax's way and the default), the gradient clip, AdamW's moments, weight decay,
the learning rate, the parameter update and the step's non-finite guard are a chain of element-wise
operations for every parameter array: the 130 arrays of MVCL-DAF++ `tiny` make a train step of 44,000
lines of optimised HLO. `grouped` (``config.optimizer.update``) concatenates the trained arrays into one
vector per weight-decay group ("decay", "rest"), runs the *same* optax transformations on those vectors
and splits the result back: on the same gradients, parameters and optimizer state equal the per-leaf
update's bit for bit (the clip's norm is still summed array by array, in the tree's order), and the state
keeps its per-leaf layout, so checkpoints do not depend on the choice (tests/training/
test_grouped_update.py: clipping, frozen parameters, the plateau factor, a rejected step). Inside a whole
train step the gradients themselves may differ in their last bits, since XLA fuses their reductions with
whatever consumes them; a run's numbers therefore depend on the choice, as on XLA options.

What it buys: a smaller program, compiled faster (the tiny presets' train steps 1.09-1.28x, MVCL-DAF++'s
4.5 -> 3.8 s: benchmarks/README, "A train step's optimizer update"); the test suite's `tiny` presets use
it. What it costs: copying parameters, gradients and both moments into the vectors and back every step,
more than it saves for large models. A state sharded over the mesh's ``model`` axis keeps the per-leaf
update.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmfuse_jax.training import adamw

# (grads, opt_state, params, ok) -> (params, opt_state): the step's update, keeping the old values where
# ``ok`` (a scalar bool) is False.
Update = Callable[[Any, Any, Any, jax.Array], tuple[Any, Any]]
# ok -> the optimizer of one step: with ``ok`` (a traced scalar bool) its AdamW moments come back already
# guarded (`training.state.make_optimizer`, `training/adamw.py`); with None, optax's own update.
TxFor = Callable[[jax.Array | None], optax.GradientTransformation]

DECAY, REST = "decay", "rest"
UPDATES = ("per_leaf", "grouped")
# The non-finite guard (``config.optimizer.guard``), how a rejected step keeps the old values:
# 'where' (the default): selects, AdamW's new moments inside the update, before the parameter update reads
# them (`training/adamw.py`, since 0665963), then the parameters and the rest of the state, and clips the
# gradients by a multiplication XLA fuses into the moments' passes (`adamw.clip_fn`); 'select_after':
# a select per array after optax's whole update ('where' before 0665963: what the README's experiment tables
# were measured with); 'cond': optax's update under `lax.cond(ok, update, keep)`, so a rejected step computes
# nothing. All three keep a rejected step bit for bit and give a kept step the same values, but XLA fuses
# each program differently, so their float rounding differs (whether LLVM contracts a multiply and an add
# into one FMA depends on the fusion; the 'where' clip can be one or two ulps from optax's on a clipped step):
# a run's numbers depend on the choice (MVCL-DAF++'s demo test acc 97.50 'where', 98.50 'select_after';
# DyKen-Hyena's 98.50 and 99.00). The AdamW update of a 22.7 M parameter BERT on a 2-core Intel Xeon
# (benchmarks/text_step_profile.py): 'where' 29.8 ms (37.5 ms with optax's clip), 'cond' 42.5 ms,
# 'select_after' 58 ms (XLA copies both moments of every array, to recompute them after the moments' own
# outputs overwrote them in place).
GUARDS = ("where", "cond", "select_after")


def keep_where(ok, new, old):
    """``new`` where ``ok``, else ``old``, leaf by leaf (the step's non-finite guard)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _guarded(guard: str, ok, compute: Callable[[], Any], old: Any) -> Any:
    """``compute()`` if ``ok`` else ``old`` (a tree of the same structure): under `lax.cond` for 'cond',
    else by a select per array."""
    if guard == "cond":
        return jax.lax.cond(ok, compute, lambda: old)
    return keep_where(ok, compute(), old)


def _apply(tx: optax.GradientTransformation, grads, opt_state, params):
    updates, new_opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_opt_state


def _guarded_update(guard: str, ok, tx_for: TxFor, grads, opt_state, params):
    """The update of ``tx_for``'s optimizer, guarded by ``guard``: under 'where' the optimizer is
    ``tx_for(ok)``, whose AdamW moments come back guarded (`training/adamw.py`: no second select, no
    copies), the rest selected after it; under 'cond' and 'select_after' ``tx_for(None)`` (optax's update)
    inside the conditional or selected after it (`_guarded`)."""
    if guard == "where":
        new_params, new_opt_state = _apply(tx_for(ok), grads, opt_state, params)
        return keep_where(ok, new_params, params), adamw.keep(ok, new_opt_state, opt_state)
    return _guarded(guard, ok, lambda: _apply(tx_for(None), grads, opt_state, params), (params, opt_state))


def per_leaf(tx: optax.GradientTransformation | TxFor, guard: str = "where") -> Update:
    """optax's update array by array, guarded by ``guard`` (`GUARDS`). ``tx``: ``ok -> optimizer``
    (`training.state.make_optimizer` with its ``ok``, `_guarded_update`) or a plain optax optimizer
    (its state cannot be guarded inside: 'where' selects after its update, as 'select_after')."""
    def update(grads, opt_state, params, ok):
        if isinstance(tx, optax.GradientTransformation):
            return _guarded(guard, ok, lambda: _apply(tx, grads, opt_state, params), (params, opt_state))
        return _guarded_update(guard, ok, tx, grads, opt_state, params)
    return update


class _Layout:
    """Which leaves of the params are trained and in which group, and how to move between the per-leaf
    trees of the trained leaves (``trained_def``: the params' structure, with optax's `MaskedNode` in
    place of frozen leaves when some are frozen) and the grouped vectors."""

    def __init__(self, params, decay: dict, frozen: dict | None):
        leaves, self.treedef = jax.tree_util.tree_flatten(params)
        decay_leaves = self.treedef.flatten_up_to(decay)
        frozen_leaves = self.treedef.flatten_up_to(frozen) if frozen is not None else [False] * len(leaves)
        self.trained = [i for i, f in enumerate(frozen_leaves) if not f]
        self.frozen = [i for i, f in enumerate(frozen_leaves) if f]
        self.shapes = [leaves[i].shape for i in self.trained]
        self.group = [DECAY if decay_leaves[i] else REST for i in self.trained]
        self.keys = [k for k in (DECAY, REST) if k in self.group]
        dtypes = {jnp.dtype(leaves[i].dtype) for i in self.trained}
        if len(dtypes) > 1:
            raise ValueError(f"grouped update: the trained parameters have several dtypes {sorted(map(str, dtypes))}")
        if frozen is None:
            self.trained_def = self.treedef
        else:
            masked = [optax.MaskedNode() if f else 0 for f in frozen_leaves]
            self.trained_def = jax.tree_util.tree_structure(self.treedef.unflatten(masked))
        self.grouped_def = jax.tree_util.tree_structure(dict.fromkeys(self.keys, 0))

    def to_groups(self, trained_leaves: list) -> dict:
        return {k: jnp.concatenate([x.reshape(-1) for x, g in zip(trained_leaves, self.group) if g == k])
                for k in self.keys}

    def from_groups(self, groups: dict) -> list:
        pieces = {}
        for k in self.keys:
            sizes = [int(np.prod(s)) for s, g in zip(self.shapes, self.group) if g == k]
            pieces[k] = iter(jnp.split(groups[k], np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [groups[k]])
        return [next(pieces[g]).reshape(s) for s, g in zip(self.shapes, self.group)]

    def state_to_groups(self, state):
        """Every params-shaped tree in an optax state (AdamW's moments) as the grouped vectors."""
        is_params = lambda x: jax.tree_util.tree_structure(x) == self.trained_def
        return jax.tree_util.tree_map(lambda x: self.to_groups(jax.tree_util.tree_leaves(x)) if is_params(x) else x,
                                      state, is_leaf=is_params)

    def state_from_groups(self, state):
        is_grouped = lambda x: isinstance(x, dict) and jax.tree_util.tree_structure(x) == self.grouped_def
        return jax.tree_util.tree_map(
            lambda x: self.trained_def.unflatten(self.from_groups(x)) if is_grouped(x) else x, state,
            is_leaf=is_grouped)


def grouped(chain: TxFor, grad_clip: float,
            decay_mask: Callable, frozen_labels: Callable | None, guard: str = "where") -> Update:
    """The grouped update of ``chain`` (`TxFor`: the trained parameters' optax chain, built with
    `optax.identity()` where the per-leaf chain clips and with a weight-decay mask that reads a group's name:
    the per-leaf chain's state has the same structure), global-norm clipping at ``grad_clip`` (<= 0: none) and
    ``decay_mask`` / ``frozen_labels`` (params -> a tree of bools / of 'trained' and 'frozen'), as the
    per-leaf optimizer `training.state.make_optimizer` builds them (the state wrapped in optax's
    `multi_transform` state when some parameters are frozen), and the non-finite ``guard`` (`GUARDS`; frozen
    parameters keep the per-leaf select: their update is zero)."""
    def update(grads, opt_state, params, ok):
        frozen = None
        if frozen_labels is not None:
            frozen = jax.tree_util.tree_map(lambda label: label == "frozen", frozen_labels(params))
        layout = _Layout(params, decay_mask(params), frozen)
        g_leaves, p_leaves = layout.treedef.flatten_up_to(grads), layout.treedef.flatten_up_to(params)
        g_trained, p_trained = [g_leaves[i] for i in layout.trained], [p_leaves[i] for i in layout.trained]
        inner = opt_state.inner_states["trained"].inner_state if frozen is not None else opt_state
        g, p = layout.to_groups(g_trained), layout.to_groups(p_trained)
        if grad_clip > 0:  # the per-leaf chain's clip (`adamw.clip_fn`), its norm summed array by array as there
            clip = adamw.clip_fn(optax.tree.norm(g_trained), grad_clip, multiply=guard == "where")
            g = {k: clip(t) for k, t in g.items()}
        state = layout.state_to_groups(inner)
        expected = jax.tree_util.tree_structure(chain(None).init(p))
        if jax.tree_util.tree_structure(state) != expected:
            raise ValueError(f"grouped update: the optimizer state does not have the layout of its chain "
                             f"({jax.tree_util.tree_structure(state)} vs {expected}); use optimizer.update='per_leaf'")
        new_p, new_state = _guarded_update(guard, ok, chain, g, state, p)
        new_inner = layout.state_from_groups(new_state)
        new_leaves = list(p_leaves)
        for i, x in zip(layout.trained, layout.from_groups(new_p)):
            new_leaves[i] = x
        for i in layout.frozen:  # optax.set_to_zero's update, applied and guarded as per leaf
            new_leaves[i] = jnp.where(ok, optax.apply_updates(p_leaves[i], jnp.zeros_like(g_leaves[i])), p_leaves[i])
        if frozen is not None:
            trained = opt_state.inner_states["trained"]._replace(inner_state=new_inner)
            new_opt_state = opt_state._replace(inner_states={**opt_state.inner_states, "trained": trained})
        else:
            new_opt_state = new_inner
        return layout.treedef.unflatten(new_leaves), new_opt_state
    return update
