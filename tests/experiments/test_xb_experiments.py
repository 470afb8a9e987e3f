"""The mechanisms behind three experiments of issue 19: the per-batch prototype statistics of
mvcl_batch_prototypes, the warm start from another run (``config.init_from``) of mvcl_transfer, and the
synthetic RoBERTa of kuda_text_encoders. (Their end-to-end runs: test_experiments.py.)"""
from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmfuse_jax import losses, registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.experiments import Run, mvcl_batch_prototypes, runner
from mmfuse_jax.experiments.mvcl_batch_prototypes import batch_prototypes, class_variance, prototype_stats
from mmfuse_jax.training import init_pieces
from mmfuse_jax.training import stages as stages_lib
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training.checkpoint import Checkpoints

# ------------------------------------------------------------------------------ batch prototypes


def test_batch_prototypes_are_the_prototypes_of_the_loss():
    """The loss recomputed from `batch_prototypes` equals `losses.prototype_contrastive_loss` (absent class 3)."""
    rng = np.random.default_rng(0)
    emb, labels = rng.standard_normal((12, 5)), np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 4, 4, 2])
    protos, present = batch_prototypes(emb, labels, 5, np.arange(12)[None])
    assert present[0].tolist() == [True, True, True, False, True] and not protos[0, 3].any()
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    logits = np.where(present[0], z @ protos[0].T / 0.1, -np.inf)
    nll = -(logits[np.arange(12), labels] - np.log(np.exp(logits).sum(1)))
    want = losses.prototype_contrastive_loss(jnp.asarray(emb), jnp.asarray(labels), jnp.ones(12), 5, 0.1)
    np.testing.assert_allclose(nll.mean(), float(want), rtol=1e-5)


def test_class_variance_by_hand():
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    protos = np.stack([np.stack([e1, e1, e1]), np.stack([e2, e1, np.zeros(3)])])  # [2 batches, 3 classes, 3]
    present = np.array([[True, True, True], [True, True, False]])
    var = class_variance(protos, present)
    # class 0: e1 then e2 -> mean (e1+e2)/2, each at squared distance 1/2; class 1: the same twice; class 2: once
    np.testing.assert_allclose(var[:2], [0.5, 0.0])
    assert np.isnan(var[2])


def test_rare_classes_vary_more_and_every_class_varies_less_in_larger_batches():
    rng = np.random.default_rng(1)
    counts = [200, 200, 200, 20, 20, 20]
    labels = np.repeat(np.arange(6), counts)
    centres = rng.standard_normal((6, 8)) * 2
    emb = centres[labels] + rng.standard_normal((len(labels), 8))
    stats = prototype_stats(emb, labels, 6, batch_sizes=(8, 32, 128), repeats=4)
    assert stats["rare"] == [3] and stats["frequent"] == [2] and stats["counts"] == counts
    s = stats["by_batch_size"]
    assert s[8]["var_frequent"] > s[32]["var_frequent"] > s[128]["var_frequent"]
    assert s[32]["var_rare"] > s[32]["var_frequent"] and s[128]["var_rare"] > s[128]["var_frequent"]
    assert s[8]["absent_rare"] > s[8]["absent_frequent"] and s[128]["absent_frequent"] == 0.0
    assert set(prototype_stats(emb[:20], labels[:20], 6, batch_sizes=(8, 16))["by_batch_size"]) == {8}  # >= 2 batches


# ------------------------------------------------------------------------------ warm start from a run


def _save(run_dir: str, params: dict) -> None:
    ckpt = Checkpoints(run_dir)
    ckpt.save_best(state_lib.create(params, optax.adamw(1e-3), 0), {"epoch": 1})
    ckpt.close()


def _config(run: str, exclude=(), seed: int = 3):
    return ml_collections.ConfigDict({"seed": seed, "init_from": {"run": run, "select": "best", "exclude": exclude}})


def test_init_from_loads_every_subtree_but_the_excluded_ones_into_the_first_stage(tmp_path):
    src = {"encoder": {"kernel": np.full((4, 3), 2.0, np.float32)},
           "classifier": {"kernel": np.ones((3, 5), np.float32)}}
    _save(str(tmp_path / "src_3"), src)
    fresh = {"encoder": {"kernel": jnp.zeros((4, 3))}, "classifier": {"kernel": jnp.zeros((3, 7))}}
    config = _config(str(tmp_path / "src_{seed}"), ("classifier",))
    plan = [stages_lib.PlannedStage(registry.Stage("a"), config, str(tmp_path / "a")),
            stages_lib.PlannedStage(registry.Stage("b"), config, str(tmp_path / "b"))]
    out = stages_lib.warm_start_fn(plan[0], plan)(fresh)
    np.testing.assert_array_equal(out["encoder"]["kernel"], src["encoder"]["kernel"])  # '{seed}' -> src_3
    assert out["classifier"]["kernel"].shape == (3, 7) and not np.asarray(out["classifier"]["kernel"]).any()
    assert stages_lib.warm_start_fn(plan[1], plan) is None  # only the recipe's first stage
    assert stages_lib.init_from(_config("")) is None and stages_lib.init_from(None) is None
    with pytest.raises(ConfigError, match="do not match"):  # kept subtrees are grafted strictly
        stages_lib.graft(fresh, [stages_lib.init_from(_config(str(tmp_path / "src_{seed}")))()])
    with pytest.raises(ConfigError, match=r"exclude names \['head'\]"):
        stages_lib.init_from(_config(str(tmp_path / "src_{seed}"), ("head",)))()
    with pytest.raises(Exception, match="train first"):
        stages_lib.init_from(_config(str(tmp_path / "missing")))()


def test_mvcl_mintrec_params_fill_a_mintrec2_model_but_its_classifier(tmp_path):
    """mvcl_transfer's fine-tuned run starts from the MIntRec run's params: every one but the head."""
    from configs import mvcl_daf
    from mmfuse_jax.encoders.bert import BertConfig

    bert = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    b, batch = 2, {"text_ids": jnp.ones((2, 6), jnp.int32), "text_mask": jnp.ones((2, 6), jnp.int32),
                   "text_type_ids": jnp.zeros((2, 6), jnp.int32), "label": jnp.zeros(2, jnp.int32)}
    for m, dim in (("audio", 24), ("video", 12)):
        batch.update({m: jnp.ones((b, 5, dim)), f"{m}_mask": jnp.ones((b, 5), jnp.int32)})

    def init(preset: str, key: int):
        c = mvcl_daf.get_config(preset)
        model = registry.get("mvcl_daf").build(c.model, {"bert": bert, "num_classes": len(c.model.label_names)})
        # in pieces (`init_pieces`, as the loop inits every model): op by op would dispatch ~thousands of ops
        return c, init_pieces.call(lambda k: model.init(k, batch, train=False), jax.random.key(key))["params"]

    _, source = init("tiny", 0)
    _save(str(tmp_path / "mintrec" / "seed_0"), source)
    c, fresh = init("tiny_mintrec2", 1)
    ft = runner.build_config(Run("ft", "mvcl_daf", {"init_from.run": "{out}/runs/x"}), "tiny", "/o", {})
    assert ft.init_from.run == "/o/runs/x"  # '{out}' in an experiment's override: its output folder
    c.init_from.run, c.init_from.exclude, c.seed = str(tmp_path / "mintrec" / "seed_{seed}"), ("classifier",), 0
    plan = stages_lib.plan(c, str(tmp_path / "ft"))
    out = stages_lib.warm_start_fn(plan[0], plan)(fresh)
    flat = lambda t: dict(jax.tree_util.tree_flatten_with_path(t)[0])
    got, src, new = flat(out), flat(source), flat(fresh)
    assert out["classifier"]["kernel"].shape[-1] == 30 and source["classifier"]["kernel"].shape[-1] == 20
    for path, leaf in got.items():
        want = new[path] if path[0].key == "classifier" else src[path]
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want), err_msg=jax.tree_util.keystr(path))


# ------------------------------------------------------------------------------ synthetic RoBERTa


def test_synthetic_roberta_data_is_the_bert_data_with_a_roberta_tokenising_each_word_once(tmp_path):
    import dataclasses

    from configs import datasets
    from mmfuse_jax.data import pipeline, synthetic
    from mmfuse_jax.data.synthetic import mmsa
    from mmfuse_jax.encoders.bert import BertConfig, load_tokenizer

    bert_ds, rob_ds = datasets.dataset("synthetic_mmsa_tiny"), datasets.dataset("synthetic_mmsa_tiny_roberta")
    assert rob_ds.read_options.tokenize_raw_text and rob_ds.synthetic.text_encoder == "roberta"
    spec = dataclasses.replace(synthetic.spec_of(rob_ds.synthetic), train=8, dev=4, test=4)
    roots = {}
    for name, s in (("bert", dataclasses.replace(spec, text_encoder="bert")), ("roberta", spec),
                    ("knowledge", dataclasses.replace(spec, seed=1))):
        roots[name] = mmsa.write(str(tmp_path / name), s)
    read = lambda name: open(os.path.join(roots[name], mmsa.PICKLE), "rb").read()
    assert read("bert") == read("roberta")  # the same data
    cfg = BertConfig.from_json(os.path.join(roots["roberta"], "bert", "config.json"))
    assert cfg.model_type == "roberta" and (cfg.hidden_size, cfg.num_hidden_layers) == (spec.bert_hidden,
                                                                                          spec.bert_layers)
    for f in ("vocab.json", "merges.txt"):  # stage 1 (knowledge, seed 1) and stage 2 share the tokenizer
        assert open(os.path.join(roots["roberta"], "bert", f)).read() == open(os.path.join(roots["knowledge"],
                                                                                             "bert", f)).read()
    texts = [t for split in pickle.loads(read("roberta")).values() for t in split["raw_text"]]
    ids, truncated = pipeline.tokenize(texts, load_tokenizer(os.path.join(roots["roberta"], "bert")), spec.text_len)
    assert truncated == 0 and [len(i) for i in ids] == [len(t.split()) + 2 for t in texts]
    assert bert_ds.synthetic.text_encoder == "bert" and not bert_ds.read_options.tokenize_raw_text
    with pytest.raises(ConfigError, match="text_encoder='gpt'"):
        mmsa.write(str(tmp_path / "bad"), dataclasses.replace(spec, text_encoder="gpt"))
    with pytest.raises(ConfigError, match="text_encoder"):  # an existing root written with another encoder
        synthetic.ensure(ml_collections.ConfigDict({"root": roots["bert"], "synthetic": {
            **synthetic.config_fields("mmsa", spec)}}))


def test_kuda_roberta_presets_and_the_missing_checkpoint_error(tmp_path, monkeypatch):
    from configs import kuda
    from mmfuse_jax.errors import DataError
    from mmfuse_jax.experiments import kuda_text_encoders

    demo = kuda.get_config("demo_roberta")
    assert demo.dataset.name == "synthetic_mmsa_demo_roberta" and demo.dataset.read_options.tokenize_raw_text
    assert demo.stage1.dataset.name == "synthetic_mmsa_demo_knowledge_roberta"
    base = kuda.get_config("demo")
    assert demo.model.to_dict() == base.model.to_dict() and demo.optimizer.to_dict() == base.optimizer.to_dict()
    mosi = kuda.get_config("mosi_roberta")
    assert mosi.dataset.bert_path == kuda.ROBERTA_PATH and mosi.stage1.dataset.read_options.tokenize_raw_text
    assert mosi.dataset.prepared_dir != kuda.get_config("mosi").dataset.prepared_dir
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="roberta-base"):
        kuda_text_encoders.runs("mosi")
    assert [r.preset("demo") for r in kuda_text_encoders.runs("demo")] == ["demo", "demo_roberta"]
    assert mvcl_batch_prototypes.runs("tiny")[0].model == "mvcl_daf"


def test_runs_saved_before_init_from_and_text_encoder_still_match(tmp_path):
    """Older run folders (no ``init_from``, MMSA data without ``text_encoder``) resume and evaluate."""
    from training.test_identity import _saved_without  # tests/ is on sys.path under pytest

    from mmfuse_jax.training import identity

    workdir, config = _saved_without("mvcl_daf", ("init_from",), tmp_path)
    identity.check(workdir, config)
    config.init_from.exclude = ("classifier",)
    with pytest.raises(ConfigError, match="init_from.exclude"):
        identity.check(workdir, config)
    old = {"model_name": "kuda", "dataset": {"synthetic": {"generator": "mmsa", "train": 8}}}
    os.makedirs(tmp_path / "kuda_old")
    identity.record(str(tmp_path / "kuda_old"), old)
    identity.check(str(tmp_path / "kuda_old"), {**old, "dataset": {"synthetic": {
        "generator": "mmsa", "train": 8, "text_encoder": "bert"}}})
    with pytest.raises(ConfigError, match="text_encoder"):
        identity.check(str(tmp_path / "kuda_old"), {**old, "dataset": {"synthetic": {
            "generator": "mmsa", "train": 8, "text_encoder": "roberta"}}})
