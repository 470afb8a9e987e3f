"""AdamW with the train step's non-finite guard on its moments (optax's arithmetic, a faster program), and
a gradient clip XLA can fuse (optax's up to one or two ulps on a clipped step).

The step keeps the old parameters and optimizer state when its loss or gradient norm is not finite
(`grouped_update.GUARDS`). Selecting after optax's update (``where(ok, new, old)`` per array, the guard
'select_after', the default 'where' before 0665963) gives XLA a program in which the parameter update
recomputes the new moments from the old ones while the moments' own outputs overwrite those old ones in
place, so it copies both moments of every array first: on a 22.7 M parameter BERT (2-core Intel Xeon)
the update took 58 ms against 37 ms unguarded. Here (the guard 'where') the new moments are selected
first and the bias-corrected update reads the selected ones: 37.5 ms, the same operations on the same
values (a kept step's moments are the new ones; a rejected step's parameters are selected back by the
caller). The float rounding is not always the same: whether LLVM contracts a multiply and an add into
one FMA depends on the fusion (tests/training/test_adamw.py: 0.5 % of a 4096 x 64 array one ulp apart
after five unclipped steps). `make demo`'s five runs came out bit for bit the same; MVCL-DAF++'s demo
test acc 98.50 -> 97.50 and KuDA's test MAE 0.15672046 -> 0.15672049 (README, "Training and evaluating").

The same program clips the gradient as one multiplication by ``max_norm / norm`` (`clip_by_global_norm`),
which XLA fuses into each moment's pass, instead of optax's division, which it writes out as a clipped copy
of every gradient first: the update above 37.5 -> 29.8 ms. A clipped step can round one or two ulps apart
from optax's; `make demo`'s DyKen-Hyena rows moved with it (README, "The two commands").

`adamw` builds optax.adamw's chain (`scale_by_adam`, `add_decayed_weights`, `scale_by_learning_rate`)
with this module's `scale_by_adam` in place of optax's: the same state types and structure, so
checkpoints and resumes do not care which built them. ``ok=None`` is optax's own update.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def scale_by_adam(b1: float, b2: float, eps: float, ok: jax.Array | None = None) -> optax.GradientTransformation:
    """optax.scale_by_adam (eps_root 0, no nesterov, moments in the params' dtype), its new moments
    replaced by the old ones where ``ok`` (a scalar bool; None: always new) is False before the update
    reads them, and its count kept likewise: the state it returns is already the guarded one (`keep`)."""
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count_inc = optax.safe_increment(state.count)
        count = count_inc
        if ok is not None:
            mu, nu = jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), (mu, nu), (state.mu, state.nu))
            count = jnp.where(ok, count_inc, state.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count_inc)
        nu_hat = optax.tree.bias_correction(nu, b2, count_inc)
        updates = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v + 0.0) + eps), mu_hat, nu_hat)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=optax.tree.cast_like(nu, state.nu))

    return optax.GradientTransformation(base.init, update_fn)


def clip_fn(norm: jax.Array, max_norm: float, multiply: bool = True) -> Callable[[jax.Array], jax.Array]:
    """The clip of one gradient array, given the gradients' global ``norm``: unchanged while ``norm`` is
    under ``max_norm``, else scaled to ``max_norm / norm``. ``multiply``: the 'where' program's clip, one
    multiplication by that factor (``t * (c / n)``, torch's ``clip_grad_norm_`` without its 1e-6); else
    optax.clip_by_global_norm's ``select(norm < c, t, (t / n) * c)``. The two can differ by one or two ulps
    on a clipped step; on an unclipped one both give ``t`` bit for bit."""
    if multiply:
        scale = jnp.where(norm < max_norm, jnp.ones_like(norm), max_norm / norm)
        return lambda t: t * scale.astype(t.dtype)
    trigger = jnp.squeeze(norm < max_norm)
    return lambda t: jax.lax.select(trigger, t, (t / norm.astype(t.dtype)) * max_norm)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """optax.clip_by_global_norm (the same norm, trigger and empty state) with `clip_fn`'s multiplication:
    XLA does not duplicate a division into the two fusions that read it (AdamW's moments), so optax's clip
    makes it write a clipped copy of every gradient, which both moments then read beside the unclipped
    one; a multiplication by a scalar is fused into each moment's own pass. The AdamW update of a 22.7 M
    parameter BERT on a 2-core Intel Xeon: 37.5 -> 29.8 ms (benchmarks/text_step_profile.py)."""
    def update_fn(updates, state, params=None):
        del params
        clip = clip_fn(optax.tree.norm(updates), max_norm)
        return jax.tree_util.tree_map(clip, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def adamw(learning_rate: optax.ScalarOrSchedule, b1: float, b2: float, eps: float, weight_decay: float,
          mask: Any, ok: jax.Array | None = None) -> optax.GradientTransformation:
    """optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay, mask=mask) with `scale_by_adam`'s
    guard on the moments (``ok``; None: optax's update)."""
    return optax.chain(scale_by_adam(b1, b2, eps, ok), optax.add_decayed_weights(weight_decay, mask),
                       optax.scale_by_learning_rate(learning_rate))


def keep(ok: jax.Array, new_state: Any, old_state: Any) -> Any:
    """The step's guard (``new`` where ``ok``, else ``old``, array by array) over an optimizer state whose
    AdamW part came from `scale_by_adam` with the same ``ok``: that part is taken as it is. Selecting its
    moments a second time would bring back the copies this module avoids."""
    guarded = lambda x: isinstance(x, optax.ScaleByAdamState)
    return jax.tree_util.tree_map(lambda new, old: new if guarded(new) else jnp.where(ok, new, old),
                                  new_state, old_state, is_leaf=guarded)
