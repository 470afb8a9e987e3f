"""`optimizer.update='grouped'`: AdamW over concatenated vectors gives optax's per-leaf arithmetic bit for bit
on the same gradients, keeps the state's layout, and compiles into a smaller program."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from training.test_step import big_batch, mesh_of, setup

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import grouped_update, plateau
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib


def opt_config(**kw):
    c = {"lr": 1e-2, "weight_decay": 0.05, "warmup_ratio": 0.25, "grad_clip": 1.0, "b1": 0.9, "b2": 0.999,
         "eps": 1e-8, **kw}
    return ml_collections.ConfigDict(c)


def params_tree(rng):
    """Leaves with and without weight decay (kernels; biases, scales, LayerNorm), a scalar, a frozen-able
    'encoder' subtree, shapes of every rank up to 3."""
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    return {"encoder": {"dense": {"kernel": f(6, 4), "bias": f(4)}, "LayerNorm": {"scale": f(4), "bias": f(4)}},
            "fusion": {"kernel": f(3, 4, 5), "bias": f(5), "prelu": f()},
            "classifier": {"kernel": f(5, 3), "bias": f(3)}}


def run(update, tx, params, grads_seq, oks):
    state = tx.init(params)  # a lowered reduce-on-plateau factor, so that it multiplies something
    state = jax.tree_util.tree_map(lambda x: x._replace(scale=jnp.float32(0.5)) if isinstance(x, plateau.PlateauState)
                                   else x, state, is_leaf=lambda x: isinstance(x, plateau.PlateauState))
    # Compiled as users' programs are (LLVM level >= 1), not at the suite's level 0 (conftest): there, jaxlib 0.12's
    # XLA rounds a rank-0 array's AdamW moments 1 ulp apart from the same element inside a vector (measured with
    # jax 0.12.1 on Python 3.12; equal at levels 1-3, and at every level with jax 0.10.2).
    fn = jax.jit(update, compiler_options={"xla_backend_optimization_level": 1})
    for grads, ok in zip(grads_seq, oks):
        params, state = fn(grads, state, params, jnp.bool_(ok))
    return params, state


@pytest.mark.parametrize("frozen", [(), (r"^encoder/",)], ids=["all_trained", "encoder_frozen"])
@pytest.mark.parametrize("schedule", ["linear", "plateau"])
def test_grouped_equals_optax_per_leaf_bit_for_bit(frozen, schedule):
    """Five steps on the same gradients: small ones (no clipping), large ones (clipped), a rejected
    (non-finite) step; parameters and every state leaf equal exactly, in the same layout."""
    rng = np.random.default_rng(0)
    params = params_tree(rng)
    scales = [1e-3, 10.0, 1e-2, 5.0, 1e-3]
    grads_seq = [jax.tree_util.tree_map(lambda p, s=s: (rng.standard_normal(p.shape) * s).astype(np.float32), params)
                 for s in scales]
    oks = [True, True, False, True, True]
    extra = {"schedule": "plateau", "plateau": {"metric": "acc", "mode": "max", "factor": 0.5, "patience": 1,
                                                "threshold": 1e-4, "cooldown": 0}} if schedule == "plateau" else {}
    opt = opt_config(**extra)
    tx = state_lib.make_optimizer(opt, 20, frozen)
    results = {}
    for mode in ("per_leaf", "grouped"):
        with opt.unlocked():
            opt.update = mode
        results[mode] = run(state_lib.make_update(opt, 20, frozen), tx, params, grads_seq, oks)
    (p1, s1), (p2, s2) = results["per_leaf"], results["grouped"]
    assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s2)
    for a, b in zip(jax.tree_util.tree_leaves((p1, s1)), jax.tree_util.tree_leaves((p2, s2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(params))]
    frozen_leaves = len(jax.tree_util.tree_leaves(params["encoder"])) if frozen else 0
    assert sum(moved) == len(moved) - frozen_leaves  # frozen leaves stay, every other one trained


def test_grouped_train_step_matches_per_leaf_and_compiles_smaller():
    """The whole step on early_fusion: the same state layout and (the gradients' reductions may fuse
    differently, so to float rounding) the same parameters; a smaller optimised program (HLO text)."""
    mesh = mesh_of(1)
    spec, m, tx, st0 = setup(mesh)
    batch = jax.device_put(big_batch(8), step_lib.sharding.data_sharded(mesh))
    opt = opt_config(warmup_ratio=0.0)
    tx = state_lib.make_optimizer(opt, 10)
    out, lines = {}, {}
    for mode in ("per_leaf", "grouped"):
        with opt.unlocked():
            opt.update = mode
        st = state_lib.create(jax.tree_util.tree_map(jnp.copy, st0.params), tx, 0)  # (the step donates it)
        fn = step_lib.make_train_step(m, spec.make_loss(ml_collections.ConfigDict({})), tx, mesh,
                                      update=state_lib.make_update(opt, 10))
        lines[mode] = len(fn.lower(st, batch).compile().as_text().splitlines())
        for _ in range(3):
            st, metrics = fn(st, batch)
        out[mode] = (st, float(metrics["loss"]))
    (a, loss_a), (b, loss_b) = out["per_leaf"], out["grouped"]
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    assert lines["grouped"] < lines["per_leaf"], lines  # (measured: 16,752 -> 16,526 lines; 17,072 per leaf before
    # the 'where' program's clip became a multiplication, 19,052 before training/adamw.py guarded the moments inside)


def test_update_choice_is_checked_and_a_sharded_state_stays_per_leaf(monkeypatch):
    with pytest.raises(ConfigError, match=r"config.optimizer.update='flat': expected one of \['per_leaf', 'grouped'\]"):
        state_lib.make_update(opt_config(update="flat"), 10)
    made = []
    monkeypatch.setattr(grouped_update, "grouped", lambda *a, **k: made.append("grouped"))
    state_lib.make_update(opt_config(update="grouped"), 10, replicated=False)
    assert made == []
    state_lib.make_update(opt_config(update="grouped"), 10)
    assert made == ["grouped"]


@pytest.mark.parametrize("mode", ["per_leaf", "grouped"])
def test_cond_guard_keeps_a_nan_step_and_otherwise_updates_as_the_select(mode):
    """`optimizer.guard='cond'`: a step with NaN gradients leaves parameters and state exactly as they were
    (its update is not even computed); the other steps equal the 'where' guard's to float rounding (XLA may
    fuse the update differently inside the conditional), as do those of 'select_after'."""
    rng = np.random.default_rng(1)
    params = params_tree(rng)
    grads_seq = [jax.tree_util.tree_map(lambda p, s=s: (rng.standard_normal(p.shape) * s).astype(np.float32), params)
                 for s in (1e-2, 5.0, 1e-2, 1e-3)]
    grads_seq[2] = jax.tree_util.tree_map(lambda g: np.full_like(g, np.nan), grads_seq[2])
    oks = [True, True, False, True]
    opt, out = opt_config(update=mode), {}
    tx = state_lib.make_optimizer(opt, 20, (r"^encoder/",))
    for guard in grouped_update.GUARDS:
        with opt.unlocked():
            opt.guard = guard
        update = state_lib.make_update(opt, 20, (r"^encoder/",))
        out[guard] = [run(update, tx, params, grads_seq[:n], oks[:n]) for n in (2, 3, 4)]
    for guard, (two, three, _) in out.items():  # the NaN step: nothing moved, nothing became NaN
        for a, b in zip(jax.tree_util.tree_leaves(two), jax.tree_util.tree_leaves(three)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=guard)
    for other in ("cond", "select_after"):
        for a, b in zip(jax.tree_util.tree_leaves(out["where"][-1]), jax.tree_util.tree_leaves(out[other][-1])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=other)
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(out["cond"][-1][0]),
                                                       jax.tree_util.tree_leaves(params))]
    assert sum(moved) == len(moved) - len(jax.tree_util.tree_leaves(params["encoder"]))


def test_guard_choice_is_checked_in_the_step_and_by_validation():
    from mmfuse_jax import validation

    expected = r"config.optimizer.guard='skip': expected one of \['where', 'cond', 'select_after'\]"
    with pytest.raises(ConfigError, match=expected):
        state_lib.make_update(opt_config(guard="skip"), 10)
    assert dict(validation._CHOICES)["optimizer.guard"] == grouped_update.GUARDS
