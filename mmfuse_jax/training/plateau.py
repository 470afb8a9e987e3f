"""Reduce-on-plateau learning rate (``optimizer.schedule='plateau'``), stepped once per epoch on a dev value.

The rule is PyTorch's ``ReduceLROnPlateau`` with its defaults (threshold_mode 'rel', min_lr 0,
eps 1e-8), as MulT's official training uses it (yaohungt/Multimodal-Transformer src/train.py:
``ReduceLROnPlateau(optimizer, mode='min', patience=hyp_params.when, factor=0.1)``, stepped once per
epoch with the validation loss; main.py ``--when`` 20). The multiplier of the learning rate and the
rule's counters live in the optimizer state (`PlateauState`), so they are saved with every checkpoint
and a resumed run continues exactly; `after_validation` is the one host-side update per epoch.

``optimizer.plateau``: ``metric`` (a dev metric name; MulT's validation loss on MOSI/MOSEI is the
L1 loss = our ``mae``, on IEMOCAP the 2-way cross-entropy = our ``ce``), ``mode`` ('min'|'max'),
``factor``, ``patience`` (epochs without improvement before a reduction), ``threshold`` (relative),
``cooldown`` (epochs after a reduction during which bad epochs are not counted).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmfuse_jax.errors import ConfigError

_EPS = 1e-8  # torch: a reduction smaller than this (in learning rate) is skipped
FIELDS = ("metric", "mode", "factor", "patience", "threshold", "cooldown")


class PlateauState(NamedTuple):
    scale: jax.Array       # float32 []: multiplies every update (= the learning rate's factor)
    best: jax.Array        # float32 []: the best monitored value so far (+-inf before the first epoch)
    bad_epochs: jax.Array  # int32 []: epochs since the last improvement (torch num_bad_epochs)
    cooldown: jax.Array    # int32 []: cooldown epochs left (torch cooldown_counter)


def scale_by_plateau(mode: str) -> optax.GradientTransformation:
    """Multiplies the updates by ``state.scale`` (1 until `after_validation` lowers it)."""
    def init_fn(params):
        del params
        return PlateauState(scale=jnp.ones((), jnp.float32),
                            best=jnp.asarray(math.inf if mode == "min" else -math.inf, jnp.float32),
                            bad_epochs=jnp.zeros((), jnp.int32), cooldown=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def check_config(opt, metric_names: list[str] | None = None) -> None:
    """A clear error for a bad ``optimizer.plateau`` (and an unknown dev metric) before training."""
    if opt.get("schedule", "linear") != "plateau":
        return
    p = opt.get("plateau")
    missing = [f for f in FIELDS if p is None or f not in p]
    if missing:
        raise ConfigError(f"config.optimizer.schedule='plateau' needs config.optimizer.plateau with {list(FIELDS)}; "
                          f"missing {missing}")
    if p.mode not in ("min", "max"):
        raise ConfigError(f"config.optimizer.plateau.mode={p.mode!r}: expected 'min' or 'max'")
    if not 0.0 < p.factor < 1.0:
        raise ConfigError(f"config.optimizer.plateau.factor={p.factor!r}: expected a number in (0, 1)")
    if metric_names is not None and p.metric not in metric_names:
        raise ConfigError(f"config.optimizer.plateau.metric={p.metric!r}: expected one of {metric_names}")


def rule(s: PlateauState, value: float, p, lr: float) -> PlateauState:
    """One epoch of torch's ReduceLROnPlateau.step(value) on host values (``lr``: the base learning rate)."""
    scale, best, bad, cool = float(s.scale), float(s.best), int(s.bad_epochs), int(s.cooldown)
    better = value < best * (1.0 - p.threshold) if p.mode == "min" else value > best * (1.0 + p.threshold)
    best, bad = (value, 0) if better else (best, bad + 1)
    if cool > 0:
        cool, bad = cool - 1, 0
    if bad > p.patience:
        new = scale * p.factor  # min_lr 0
        if lr * (scale - new) > _EPS:
            scale = new
        cool, bad = p.cooldown, 0
    return PlateauState(scale, best, bad, cool)


def _is_plateau(x: Any) -> bool:
    return isinstance(x, PlateauState)


def after_validation(state, dev: dict[str, float], opt):
    """The state with every `PlateauState` stepped on ``dev[opt.plateau.metric]`` (schedule 'plateau');
    the state unchanged otherwise. Called once per epoch, after the dev scores and before saving."""
    if opt.get("schedule", "linear") != "plateau":
        return state
    value = float(dev[opt.plateau.metric])

    def update(s):
        if not _is_plateau(s):
            return s
        new = rule(PlateauState(*jax.device_get(tuple(s))), value, opt.plateau, float(opt.lr))
        return PlateauState(*(jax.device_put(np.asarray(n, o.dtype), o.sharding) for n, o in zip(new, s)))

    return state.replace(opt_state=jax.tree_util.tree_map(update, state.opt_state, is_leaf=_is_plateau))


def scale_of(opt_state) -> float:
    """The current learning-rate multiplier in ``opt_state`` (1 when it has no `PlateauState`)."""
    found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(x)]
    return float(jax.device_get(found[0].scale)) if found else 1.0
