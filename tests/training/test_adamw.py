"""training/adamw.py: AdamW with the non-finite guard on its moments is optax's AdamW followed by the
step's select (to float rounding, which depends on XLA's fusions), in optax's state layout, and its program
copies no moment."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from training.test_grouped_update import opt_config, params_tree, run

from mmfuse_jax.training import adamw, grouped_update, plateau
from mmfuse_jax.training import state as state_lib

PLATEAU = {"schedule": "plateau", "plateau": {"metric": "acc", "mode": "max", "factor": 0.5, "patience": 1,
                                              "threshold": 1e-4, "cooldown": 0}}


def optax_optimizer(opt, total_steps, frozen=()):
    """The optimizer `state.make_optimizer` describes, built from optax's own transformations only."""
    parts = [optax.clip_by_global_norm(opt.grad_clip) if opt.grad_clip > 0 else optax.identity(),
             optax.adamw(state_lib.learning_rate_schedule(opt, total_steps), b1=opt.b1, b2=opt.b2, eps=opt.eps,
                         weight_decay=opt.weight_decay, mask=state_lib._decay_mask)]
    if opt.get("schedule") == "plateau":
        parts.append(plateau.scale_by_plateau(opt.plateau.mode))
    tx = optax.chain(*parts)
    if frozen:
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, state_lib._frozen_labels(frozen))
    return tx


def grads_and_oks(params, seed=0):
    """Small (unclipped) and large (clipped) gradients, and a NaN step that the guard rejects."""
    rng = np.random.default_rng(seed)
    grads = [jax.tree_util.tree_map(lambda p, s=s: (rng.standard_normal(p.shape) * s).astype(np.float32), params)
             for s in (1e-3, 10.0, 1e-2, 5.0, 1e-3)]
    grads[2] = jax.tree_util.tree_map(lambda g: np.where(np.arange(g.size).reshape(g.shape) % 2, np.nan, g), grads[2])
    return grads, [True, True, False, True, True]


@pytest.mark.parametrize("frozen", [(), (r"^encoder/",)], ids=["all_trained", "encoder_frozen"])
@pytest.mark.parametrize("schedule", ["linear", "plateau", "no_clip"])
def test_guarded_update_is_optax_then_select(frozen, schedule):
    """Five steps (unclipped, clipped, a rejected NaN step, ...) through the step's update under every guard
    against optax's own optimizer followed by the select: the same state layout; the rejected step leaves
    parameters and state bit for bit; 'select_after' is that program, bit for bit; the others equal it up to
    float rounding, which can differ in the last bit from one fusion to another (here: 'where' in 0.5 % of a
    4096 x 64 array without clipping; `make demo`'s runs came out bit for bit the same at 0665963, before
    the clip became a multiplication, which moved DyKen-Hyena's rows, README)."""
    extra = PLATEAU if schedule == "plateau" else {"grad_clip": 0.0} if schedule == "no_clip" else {}
    opt = opt_config(**extra)
    rng = np.random.default_rng(0)
    params = {**params_tree(rng), "embedding": rng.standard_normal((4096, 64)).astype(np.float32)}
    grads, oks = grads_and_oks(params)
    reference_tx = optax_optimizer(opt, 20, frozen)
    ours_tx = state_lib.make_optimizer(opt, 20, frozen)
    assert jax.tree_util.tree_structure(ours_tx.init(params)) == jax.tree_util.tree_structure(reference_tx.init(params))
    expected = run(grouped_update.per_leaf(reference_tx, "select_after"), reference_tx, params, grads, oks)
    for guard in grouped_update.GUARDS:
        with opt.unlocked():
            opt.guard = guard
        update = state_lib.make_update(opt, 20, frozen)
        before, after = (run(update, ours_tx, params, grads[:n], oks[:n]) for n in (2, 3))
        for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=guard)
        got = run(update, ours_tx, params, grads, oks)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
            if guard == "select_after":
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=guard)
            else:
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9, err_msg=guard)
        counts = [x.count for x in jax.tree_util.tree_leaves(got[1], is_leaf=lambda x: isinstance(
            x, optax.ScaleByAdamState)) if isinstance(x, optax.ScaleByAdamState)]
        assert [int(c) for c in counts] == [4]  # the rejected step counted nowhere: four kept steps


def test_without_ok_it_is_optax_adamw():
    params = params_tree(np.random.default_rng(1))
    grads, _ = grads_and_oks(params, seed=1)
    ours = adamw.adamw(1e-2, 0.9, 0.999, 1e-8, 0.05, state_lib._decay_mask)
    theirs = optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05, mask=state_lib._decay_mask)
    s1, s2 = ours.init(params), theirs.init(params)
    assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s2)
    for g in grads[:2]:
        u1, s1 = jax.jit(ours.update)(g, s1, params)
        u2, s2 = jax.jit(theirs.update)(g, s2, params)
        for a, b in zip(jax.tree_util.tree_leaves((u1, s1)), jax.tree_util.tree_leaves((u2, s2))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _entry(update, tx, params) -> str:
    """The entry computation of ``update``'s optimised program (donated params and state, as the train step
    has them)."""
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    fn = jax.jit(lambda p, s, g: update(g, s, p, jnp.isfinite(optax.global_norm(g))), donate_argnums=(0, 1))
    text = fn.lower(params, tx.init(params), grads).compile().as_text()
    return text[text.index("\nENTRY"):]


def _moment_copies(update, tx, params) -> int:
    """Copies of a donated optimizer-state array (not a scalar count) in `_entry`'s program."""
    entry = _entry(update, tx, params)
    first, end = len(jax.tree_util.tree_leaves(params)), len(jax.tree_util.tree_leaves((params, tx.init(params))))
    inputs = re.findall(r"%([\w.]+) = \S+ parameter\((\d+)\)", entry)
    state = {name for name, i in inputs if first <= int(i) < end}
    return sum(1 for m in re.finditer(r"= f32\[\d[\d,]*\]\S* copy\(%([\w.]+)\)", entry) if m.group(1) in state)


def test_the_guarded_program_copies_no_moment():
    """Why the module exists: selecting after optax's update makes XLA copy the moments it overwrites in
    place (measured: the AdamW update of a 22.7 M parameter BERT 58 -> 37.5 ms without those copies)."""
    rng = np.random.default_rng(2)
    params = {f"layer{i}": {"kernel": rng.standard_normal((256, 256)).astype(np.float32),
                            "bias": rng.standard_normal(256).astype(np.float32)} for i in range(3)}
    opt = opt_config()
    reference_tx = optax_optimizer(opt, 20)
    old = _moment_copies(grouped_update.per_leaf(reference_tx, "select_after"), reference_tx, params)
    new = _moment_copies(state_lib.make_update(opt, 20), state_lib.make_optimizer(opt, 20), params)
    assert old > 0, "the select after optax's update no longer makes XLA copy moments: adamw.py may be moot"
    assert new == 0


def _full_size_writes(update, tx, params, shape: str) -> int:
    """Instructions of `_entry`'s program that write an array of ``shape`` (e.g. 'f32[256,256]'): each is a
    pass over memory."""
    ops = re.findall(r"\n\s*(?:ROOT )?%[\w.\-]+ = " + re.escape(shape) + r"\{[\d,]*\} (\w[\w\-]*)\(",
                     _entry(update, tx, params))
    return sum(1 for op in ops if op not in ("parameter", "bitcast", "get-tuple-element"))


def test_the_where_program_clips_inside_the_moments_passes():
    """The 'where' program's clip (`adamw.clip_by_global_norm`) is a multiplication XLA fuses into each
    moment's pass: per clipped array it writes the two moments and the parameters, nothing else; optax's
    clip (a division, which XLA does not duplicate) writes a clipped copy of every gradient first
    (measured: the AdamW update of a 22.7 M parameter BERT 37.5 -> 29.8 ms without it)."""
    rng = np.random.default_rng(3)
    params = {f"layer{i}": {"kernel": rng.standard_normal((256, 256)).astype(np.float32)} for i in range(3)}
    opt = opt_config()
    assert opt.grad_clip > 0
    tx, schedule = state_lib.make_optimizer(opt, 20), state_lib.learning_rate_schedule(opt, 20)
    where = _full_size_writes(state_lib.make_update(opt, 20), tx, params, "f32[256,256]")
    # the same program with optax's clip in front of the guarded AdamW
    optax_clip = grouped_update.per_leaf(lambda ok: optax.chain(
        optax.clip_by_global_norm(opt.grad_clip),
        adamw.adamw(schedule, opt.b1, opt.b2, opt.eps, opt.weight_decay, state_lib._decay_mask, ok)), "where")
    assert where == 3 * 3, where  # mu, nu, params of each of the three arrays
    assert _full_size_writes(optax_clip, tx, params, "f32[256,256]") == 4 * 3  # and each clipped gradient


def test_the_where_programs_clip_is_optaxs_to_two_ulps():
    """`adamw.clip_by_global_norm` against optax's: the same trigger, an unclipped update bit for bit, a
    clipped one within two ulps (``t * (c / n)`` vs ``(t / n) * c``: two roundings each), the same (empty)
    state."""
    rng = np.random.default_rng(4)
    tree = {"a": rng.standard_normal((64, 33)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    ours, theirs = adamw.clip_by_global_norm(1.5), optax.clip_by_global_norm(1.5)
    assert jax.tree_util.tree_structure(ours.init(tree)) == jax.tree_util.tree_structure(theirs.init(tree))
    assert isinstance(ours.init(tree), optax.EmptyState)
    for scale, clipped in ((1e-3, False), (10.0, True)):
        g = jax.tree_util.tree_map(lambda x, s=scale: x * np.float32(s), tree)
        a, _ = jax.jit(ours.update)(g, ours.init(tree))
        b, _ = jax.jit(theirs.update)(g, theirs.init(tree))
        pairs = [(np.asarray(x), np.asarray(y))
                 for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]
        if clipped:
            ulps = np.concatenate([np.abs(x.view(np.int32).astype(np.int64) - y.view(np.int32)).ravel()
                                   for x, y in pairs])
            assert ulps.max() <= 2 and 0 < ulps.mean() < 1, (ulps.max(), ulps.mean())
            assert not np.allclose(pairs[0][0], np.asarray(g["a"]))  # (it did clip)
        else:
            for x, y in pairs:
                np.testing.assert_array_equal(x, y)
    norm = float(optax.global_norm(jax.tree_util.tree_map(lambda x: x * np.float32(10.0), tree)))
    clipped = adamw.clip_fn(jnp.float32(norm), 1.5)(jnp.float32(norm))
    assert abs(float(clipped) - 1.5) < 1e-5  # the norm itself scales to max_norm
