"""Train state and optimizer (AdamW, global-norm clipping) and its learning-rate schedules:
``optimizer.schedule`` 'linear' (warmup + linear decay, the default), 'warmup_cosine_epochs' (KuDA)
or 'plateau' (warmup, then constant times a reduce-on-plateau factor: `training/plateau.py`)."""
from __future__ import annotations

import re
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import adamw, grouped_update, plateau

SCHEDULES = ("linear", "warmup_cosine_epochs", "plateau")


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
    ``get_linear_schedule_with_warmup``, used by the MIntRec baselines).

    ``opt.schedule='warmup_cosine_epochs'`` (with ``opt.epochs``, the number of epochs of the run)
    is the per-epoch GradualWarmupScheduler(multiplier 1) + CosineAnnealingLR of KuDA's
    core/scheduler.py instead. ``'plateau'``: the linear warmup, then ``opt.lr`` constant; the
    optimizer multiplies it by the reduce-on-plateau factor (`plateau.scale_by_plateau`).
    """
    name = opt.get("schedule", "linear")
    if name not in SCHEDULES:
        raise ConfigError(f"config.optimizer.schedule={name!r}: expected one of {list(SCHEDULES)}")
    if name == "warmup_cosine_epochs":
        return warmup_cosine_epochs(opt.lr, opt.warmup_ratio, opt.epochs, total_steps)
    warmup = int(total_steps * opt.warmup_ratio)
    if name == "plateau":
        return optax.join_schedules([optax.linear_schedule(0.0, opt.lr, max(warmup, 1)),
                                     optax.constant_schedule(opt.lr)], [max(warmup, 1)]) if warmup else \
            optax.constant_schedule(opt.lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, opt.lr, max(warmup, 1)),
         optax.linear_schedule(opt.lr, 0.0, max(total_steps - warmup, 1))], [max(warmup, 1)])


def warmup_cosine_epochs(lr: float, warmup_ratio: float, epochs: int, total_steps: int) -> optax.Schedule:
    """The learning rate of epoch i (0-based), constant within the epoch: lr * i / W while i <= W
    (so epoch 0 runs at 0), then lr * (1 + cos(pi * j / T)) / 2 with j = i - floor(W) - 1, where
    W = warmup_ratio * epochs and T = epochs - W (KuDA core/scheduler.py get_scheduler, stepped once
    per epoch; ``total_steps`` = epochs x steps per epoch)."""
    if epochs <= 0 or total_steps % epochs:
        raise ValueError(f"schedule 'warmup_cosine_epochs': optimizer.epochs={epochs} must divide the "
                         f"{total_steps} steps (set it to config.num_epochs)")
    steps_per_epoch = total_steps // epochs
    w, t = warmup_ratio * epochs, max((1.0 - warmup_ratio) * epochs, 1e-9)

    def schedule(step):
        i = (jnp.asarray(step) // steps_per_epoch).astype(jnp.float32)
        warm = lr * i / w if w > 0 else jnp.full_like(i, lr)
        cosine = lr * jnp.square(jnp.cos(0.5 * jnp.pi * (i - jnp.floor(w) - 1.0) / t))  # (1 + cos x) / 2
        return jnp.where(i <= w, warm, cosine)
    return schedule


def frozen_regex(patterns: tuple[str, ...]) -> re.Pattern:
    """A stage's ``frozen`` regexes as one pattern, searched in '/'-joined param paths."""
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _frozen_labels(patterns: tuple[str, ...]):
    regex = frozen_regex(patterns)

    def labels(params):
        flat = traverse_util.flatten_dict(params)
        return traverse_util.unflatten_dict(
            {k: "frozen" if regex.search("/".join(map(str, k))) else "trained" for k in flat})
    return labels


def _chain(opt, schedule: optax.Schedule, clip: optax.GradientTransformation,
           decay_mask, ok: jax.Array | None = None) -> optax.GradientTransformation:
    """The trained parameters' chain: ``clip``, AdamW with weight decay where ``decay_mask`` (optax.adamw;
    with ``ok``, its moments guarded as `training/adamw.py` does), and the reduce-on-plateau factor if the
    schedule is 'plateau'."""
    parts = [clip, adamw.adamw(schedule, opt.b1, opt.b2, opt.eps, opt.weight_decay, decay_mask, ok)]
    if opt.get("schedule") == "plateau":  # (only then: the other schedules keep their state layout)
        # The reduce-on-plateau factor scales the whole AdamW update, as a lower lr does in torch.
        parts.append(plateau.scale_by_plateau(opt.plateau.mode))
    return optax.chain(*parts)


def make_optimizer(opt, total_steps: int, frozen: tuple[str, ...] = (),
                   ok: jax.Array | None = None) -> optax.GradientTransformation:
    """AdamW with the schedule; parameters whose '/'-joined path matches a regex in ``frozen`` (a
    stage's `registry.Stage.frozen`) get no update at all (no gradient step, no weight decay). ``ok``
    (a traced scalar bool, inside a step: the guard 'where'): AdamW's new moments are replaced by the old
    ones where it is False before the update reads them, and the clip is `adamw.clip_by_global_norm`'s
    multiplication (`training/adamw.py`; the caller still keeps the old state of a rejected step); None:
    optax's update. Either way the same state and, on a kept step, the same values (to float rounding:
    `grouped_update.GUARDS`)."""
    schedule = learning_rate_schedule(opt, total_steps)
    plateau.check_config(opt)
    clip = optax.identity()
    if opt.grad_clip > 0:
        clip = (optax.clip_by_global_norm if ok is None else adamw.clip_by_global_norm)(opt.grad_clip)
    tx = _chain(opt, schedule, clip, _decay_mask, ok)
    if frozen:
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, _frozen_labels(tuple(frozen)))
    return tx


def make_update(opt, total_steps: int, frozen: tuple[str, ...] = (), *,
                replicated: bool = True) -> grouped_update.Update:
    """The train step's update for `make_optimizer`'s optimizer (its state, its arithmetic):
    ``opt.update`` 'per_leaf' (optax array by array, the default) or 'grouped' (over concatenated
    vectors: far fewer kernels to compile, `training/grouped_update.py`). A state sharded over the mesh's
    ``model`` axis (``replicated=False``) keeps the per-leaf update. ``opt.guard``: how a non-finite step
    keeps the old state, 'where' (the default), 'cond' or 'select_after' (`grouped_update.GUARDS`)."""
    mode, guard = opt.get("update", "per_leaf"), opt.get("guard", "where")
    if mode not in grouped_update.UPDATES:
        raise ConfigError(f"config.optimizer.update={mode!r}: expected one of {list(grouped_update.UPDATES)}")
    if guard not in grouped_update.GUARDS:
        raise ConfigError(f"config.optimizer.guard={guard!r}: expected one of {list(grouped_update.GUARDS)}")
    if not replicated or mode == "per_leaf":
        return grouped_update.per_leaf(lambda ok: make_optimizer(opt, total_steps, frozen, ok), guard)
    schedule = learning_rate_schedule(opt, total_steps)
    group_decay = lambda groups: {k: k == grouped_update.DECAY for k in groups}
    chain = lambda ok: _chain(opt, schedule, optax.identity(), group_decay, ok)
    return grouped_update.grouped(chain, opt.grad_clip, _decay_mask, _frozen_labels(tuple(frozen)) if frozen else None,
                                  guard)


def current_lr(schedule: optax.Schedule, state: TrainState, step: int) -> float:
    """The learning rate of ``step`` as applied (the schedule times any reduce-on-plateau factor)."""
    return float(schedule(step)) * plateau.scale_of(state.opt_state)


def create(params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(seed), nonfinite=jnp.zeros((), jnp.int32))
