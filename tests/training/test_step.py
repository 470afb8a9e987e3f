"""The jitted train step: sharded == single device, learning, non-finite steps, compile count."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType
from models.test_models import BERT, C, make_batch, model_config

from mmfuse_jax import losses, registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import grouped_update, sharding
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib

OPT = ml_collections.ConfigDict({"lr": 1e-2, "weight_decay": 0.01, "warmup_ratio": 0.0, "grad_clip": 1.0,
                                 "b1": 0.9, "b2": 0.999, "eps": 1e-8})


def big_batch(n=8, seed=0):
    parts = [make_batch(seed + i) for i in range(n // 3 + 1)]
    b = {k: jnp.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
    b["valid"] = jnp.ones((n,), jnp.float32)
    b["label"] = jnp.arange(n, dtype=jnp.int32) % C
    return b


def setup(mesh, name="early_fusion", total_steps=10):
    spec = registry.get(name)
    m = spec.build(model_config(name), {"num_classes": C, "bert": BERT})
    params = m.init(jax.random.key(0), make_batch(), train=False)["params"]
    tx = state_lib.make_optimizer(OPT, total_steps)
    st = jax.device_put(state_lib.create(params, tx, 0), sharding.replicated(mesh))
    return spec, m, tx, st


def mesh_of(n):
    return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def test_one_two_and_four_devices_give_the_same_steps():
    """The same global batch on 1, 2 and 4 devices: the same losses and updated params (1e-5)."""
    assert jax.device_count() == 4, "conftest sets 4 CPU devices"
    results = []
    for n in (1, 2, 4):
        mesh = mesh_of(n)
        spec, m, tx, st = setup(mesh)
        train_step = step_lib.make_train_step(m, spec.make_loss(None), tx, mesh)
        losses_seen = []
        for i in range(3):
            batch = {k: jax.device_put(v, sharding.data_sharded(mesh)) for k, v in big_batch(seed=i).items()}
            st, metrics = train_step(st, batch)
            losses_seen.append(float(metrics["loss"]))
        results.append((losses_seen, jax.device_get(st.params), float(metrics["grad_norm"])))
    for other in results[1:]:
        np.testing.assert_allclose(results[0][0], other[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[0][2], other[2], rtol=1e-5)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                               results[0][1], other[1])


def test_loss_falls_on_a_fixed_batch():
    mesh = mesh_of(4)
    spec, m, tx, st = setup(mesh, total_steps=40)
    train_step = step_lib.make_train_step(m, spec.make_loss(None), tx, mesh)
    batch = big_batch()
    first = None
    for _ in range(25):
        st, metrics = train_step(st, batch)
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < 0.5 * first
    assert int(st.step) == 25


@pytest.mark.parametrize("guard", grouped_update.GUARDS)
def test_nonfinite_step_is_skipped_and_counted(guard):
    """Every guard (config.optimizer.guard, as the loop builds it: `state.make_update`) keeps the params of a
    step with a NaN input, on 4 devices."""
    mesh = mesh_of(4)
    spec, m, tx, st = setup(mesh)
    opt = OPT.copy_and_resolve_references()
    opt.guard = guard
    train_step = step_lib.make_train_step(m, spec.make_loss(None), tx, mesh, update=state_lib.make_update(opt, 10))
    before = jax.device_get(st.params)
    bad = big_batch()
    bad["audio"] = bad["audio"].at[0, 0, 0].set(jnp.nan)
    st, metrics = train_step(st, bad)
    assert not np.isfinite(float(metrics["loss"])) and int(st.nonfinite) == 1 and int(st.step) == 1
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.device_get(st.params))
    st, metrics = train_step(st, big_batch())
    assert int(st.nonfinite) == 1 and np.isfinite(float(metrics["loss"]))


def test_compiles_once_per_bucket_shape():
    mesh = mesh_of(4)
    spec, m, tx, st = setup(mesh)
    counter = step_lib.TraceCounter()
    train_step = step_lib.make_train_step(m, spec.make_loss(None), tx, mesh, counter=counter)
    for _ in range(2):
        for la in (5, 11):  # two bucket shapes, each seen twice
            b = big_batch()
            b["audio"], b["audio_mask"] = b["audio"][:, :la], b["audio_mask"][:, :la]
            st, _ = train_step(st, b)
    assert counter.count == 2


def test_eval_steps_are_kept_per_model_mesh_and_layout():
    """`step_lib.memo`: equal models (equal fields) on one mesh and layout share one jitted eval step,
    which traces once for both; anything else that changes the program gets its own."""
    mesh = mesh_of(4)
    spec, m, tx, st = setup(mesh)
    again = spec.build(model_config("early_fusion"), {"num_classes": C, "bert": BERT})  # a new, equal object
    assert again is not m and again == m
    first = step_lib.make_eval_step(m, mesh, params_sharding=sharding.replicated(mesh))
    assert step_lib.make_eval_step(again, mesh, params_sharding=sharding.replicated(mesh)) is first
    batch = {k: jax.device_put(v, sharding.data_sharded(mesh)) for k, v in big_batch().items()}
    out = first(st.params, batch)
    step_lib.make_eval_step(again, mesh, params_sharding=sharding.replicated(mesh))(st.params, batch)
    assert first._cache_size() == 1 and out["logits"].shape == (8, C)
    others = [step_lib.make_eval_step(m, mesh_of(2), params_sharding=sharding.replicated(mesh_of(2))),
              step_lib.make_eval_step(m, mesh, params_sharding=None),
              step_lib.make_eval_step(m, mesh, params_sharding=sharding.replicated(mesh), extra_outputs=("gate",)),
              step_lib.make_eval_step(m, mesh, params_sharding=sharding.replicated(mesh),
                                      compute_dtype=jnp.bfloat16),
              step_lib.make_eval_step(m.clone(hidden=m.hidden * 2),
                                      mesh, params_sharding=sharding.replicated(mesh))]
    assert len({id(f) for f in [first, *others]}) == 6
    counter = step_lib.TraceCounter()  # a counted step is the caller's own, never shared
    assert step_lib.make_eval_step(m, mesh, counter=counter) is not step_lib.make_eval_step(m, mesh, counter=counter)
    built = []
    unhashable = step_lib.memo(("x", [1]), lambda: built.append(1) or len(built))
    assert unhashable == 1 and step_lib.memo(("x", [1]), lambda: built.append(1) or len(built)) == 2


def test_train_step_program_key_ignores_the_seed_file_locations_and_the_host_loop(tmp_path):
    """`loop._program_key` (the memoised train step's config part): two runs that differ only in their seed,
    data folders, synthetic knobs or the host loop's settings (epochs, early stopping, checkpoints, logging,
    a stage recipe) share a step; a field of the loss, the optimizer, the batch or the dtype does not."""
    from conftest import tiny_config

    from mmfuse_jax.training import loop

    base = tiny_config("hct_dmg", str(tmp_path / "a"))
    same = tiny_config("hct_dmg", str(tmp_path / "b"), seed=7, num_epochs=3, patience=1, keep_checkpoints=2,
                       log_every=1, **{"dataset.prepared_dir": str(tmp_path / "p"), "gate_freeze.enabled": False,
                                       "early_stop_metric": "f1"})
    same.dataset.synthetic = {"audio_noise": 0.5}
    assert loop._program_key(same) == loop._program_key(base)
    for field, value in (("optimizer.lr", 0.5), ("model.dropout", 0.3), ("batch_size", 8),
                         ("compute_dtype", "bfloat16"), ("dataset.num_buckets", 1)):
        assert loop._program_key(tiny_config("hct_dmg", str(tmp_path / "a"), **{field: value})) \
            != loop._program_key(base), field
    kuda = tiny_config("kuda", str(tmp_path / "k"))
    assert loop._program_key(tiny_config("kuda", str(tmp_path / "k"), **{"model.nce_weight": 0.0})) \
        != loop._program_key(kuda)  # read by the loss (`kuda.make_loss`), not the model


@pytest.mark.parametrize("name", registry.names())
def test_every_loss_reads_only_the_config_sections_the_step_memo_keys_on(name, tmp_path):
    """Each model's ``make_loss`` builds its loss from `loop._PROGRAM_FIELDS` alone, so two runs the train
    step memo treats as one program cannot have different losses."""
    from conftest import tiny_config

    from mmfuse_jax.training import loop

    full = tiny_config(name, str(tmp_path))
    only = ml_collections.ConfigDict({k: full[k] for k in loop._PROGRAM_FIELDS if k in full})
    spec = registry.get(name)
    loss_a, loss_b = spec.make_loss(only), spec.make_loss(full)
    assert type(loss_a) is type(loss_b)
    assert getattr(loss_a, "keywords", None) == getattr(loss_b, "keywords", None)


def test_init_shapes_and_init_share_one_trace_of_the_model(tiny_synthetic, monkeypatch):
    """`experiment.abstract_params` (eval_shape of the init) and `init_params` (the jitted init) trace the
    model once between them: the init is one function object per model, and JAX keys traces on it."""
    from conftest import tiny_config

    from mmfuse_jax.training import experiment

    step_lib.memo_clear()
    exp = experiment.build(tiny_config("text_only", tiny_synthetic), data=False)
    cls, traces = type(exp.model), []
    original = cls.init
    monkeypatch.setattr(cls, "init", lambda self, *a, **k: traces.append(1) or original(self, *a, **k))
    shapes = experiment.abstract_params(exp)
    params = experiment.init_params(exp)
    assert len(traces) == 1, traces
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params) == \
        jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), shapes)
    experiment.init_params(exp)  # a later init of the model (another seed, stage or run) traces nothing
    assert len(traces) == 1, traces


def test_init_with_a_pretrained_bert_skips_only_the_random_bert(tiny_synthetic):
    """A model whose BERT the checkpoint replaces: its jitted init computes no BERT (the program's
    outputs hold none of its weights), every other parameter equals the full init's bit for bit, and
    ``params['bert']`` is the checkpoint. Without a pretrained BERT the random BERT is the init's."""
    from conftest import tiny_config
    from flax import traverse_util

    from mmfuse_jax.encoders import bert as bert_lib
    from mmfuse_jax.training import experiment

    config = tiny_config("early_fusion", tiny_synthetic)
    exp = experiment.build(config, data=False)
    key, batch = experiment._init_args(exp)
    full = jax.jit(lambda k, b: exp.model.init(k, b, train=False)["params"])(key, batch)
    skip = experiment._init_fn(exp.model, True)
    skipped = jax.eval_shape(skip, key, batch)  # traced, not run op by op (a program per op)
    assert skipped["bert"] is None
    bert_leaves = len(jax.tree_util.tree_leaves(full["bert"]))
    outputs = len(jax.tree_util.tree_leaves(skipped))
    assert bert_leaves > 10 and outputs == len(jax.tree_util.tree_leaves(full)) - bert_leaves
    params = traverse_util.flatten_dict(jax.device_get(experiment.init_params(exp)))
    checkpoint = bert_lib.load_pretrained(config.dataset.bert_path)[1]
    want = traverse_util.flatten_dict(jax.device_get({**full, "bert": checkpoint}))
    assert set(params) == set(want)
    assert all(np.array_equal(params[k], want[k]) for k in want), [k for k in want if not np.array_equal(params[k],
                                                                                                       want[k])]
    config.model.pretrained_bert = False
    params = traverse_util.flatten_dict(jax.device_get(experiment.init_params(experiment.build(config, data=False))))
    want = traverse_util.flatten_dict(jax.device_get(full))
    assert set(params) == set(want) and all(np.array_equal(params[k], want[k]) for k in want)


def test_batch_size_must_divide_the_mesh():
    from mmfuse_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size=10 must be divisible by the 4 devices"):
        sharding.check_batch_size(10, mesh_of(4))


def test_weighted_mean_ignores_invalid_rows():
    v = jnp.array([1.0, 3.0, 100.0])
    assert float(losses.weighted_mean(v, jnp.array([1.0, 1.0, 0.0]))) == 2.0
    assert float(losses.weighted_mean(v, jnp.zeros(3))) == 0.0


def test_schedule_warms_up_then_decays():
    opt = ml_collections.ConfigDict(dict(OPT, warmup_ratio=0.1))
    sched = state_lib.learning_rate_schedule(opt, 100)
    assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(1e-2)
    assert float(sched(55)) == pytest.approx(0.5e-2) and float(sched(100)) == pytest.approx(0.0, abs=1e-9)


def test_bfloat16_compute_keeps_float32_master_state():
    mesh = mesh_of(4)
    spec, m, tx, st = setup(mesh)
    train_step = step_lib.make_train_step(m, spec.make_loss(None), tx, mesh, compute_dtype=jnp.bfloat16)
    st2, metrics = train_step(st, big_batch())
    dtypes = {x.dtype for x in jax.tree_util.tree_leaves((st2.params, st2.opt_state)) if hasattr(x, "dtype")}
    assert jnp.bfloat16 not in dtypes and metrics["loss"].dtype == jnp.float32
    assert np.isfinite(float(metrics["loss"]))


def test_compiler_options_reach_the_steps_and_xla_refusals_are_config_errors():
    """config.compiler_options: one jitted eval step per option set (the memo keys on them), the same
    predictions up to float rounding, and an option XLA does not know is a ConfigError before any step."""
    mesh = mesh_of(1)
    spec, m, tx, st = setup(mesh)
    batch = big_batch(4)
    level1 = step_lib.compiler_options(ml_collections.ConfigDict(
        {"compiler_options": "xla_backend_optimization_level=1"}))
    assert level1 == {"xla_backend_optimization_level": 1}
    assert step_lib.compiler_options(ml_collections.ConfigDict({"compiler_options": ""})) is None
    plain, tuned = step_lib.make_eval_step(m, mesh), step_lib.make_eval_step(m, mesh, options=level1)
    assert plain is not tuned and step_lib.make_eval_step(m, mesh, options=dict(level1)) is tuned
    with pytest.raises(Exception, match="No such compile option"):  # the options reach XLA's compile
        step_lib.make_eval_step(m, mesh, options={"xla_no_such_option": 1})(st.params, batch)
    np.testing.assert_allclose(tuned(st.params, batch)["logits"], plain(st.params, batch)["logits"], rtol=1e-5,
                               atol=1e-6)
    train = step_lib.make_train_step(m, spec.make_loss(model_config("early_fusion")), tx, mesh, options=level1)
    new_state, metrics = train(st, batch)
    assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss"]))
    for text, message in (("xla_no_such_option=1", "No such compile option: 'xla_no_such_option'"),
                          ("xla_backend_optimization_level=high", "not a valid int32 value")):
        with pytest.raises(ConfigError, match=message):
            step_lib.compiler_options(ml_collections.ConfigDict({"compiler_options": text}))
