"""The pieces of hct_attention_distortion, kuda_attention_viz and kuda_cross_dataset (their end-to-end runs on
`tiny` are in test_experiments.py), and `training.evaluation.on_dataset` / `evaluate_on`."""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil

import ml_collections
import numpy as np
import pytest
from test_predictor import trained_run

from configs import datasets, kuda
from mmfuse_jax import experiments
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.experiments import hct_attention_distortion as had
from mmfuse_jax.experiments import kuda_attention_viz as viz
from mmfuse_jax.experiments import kuda_cross_dataset as cross
from mmfuse_jax.experiments import runner
from mmfuse_jax.training.evaluation import evaluate_on, on_dataset

# ------------------------------------------------------------------ hct_attention_distortion


def test_map_modalities_of_mult_and_hct_dmg():
    assert had.map_modalities("text_with_audio/layer_1/attn") == ("text", "audio")
    assert had.map_modalities("video_with_text/layer_0/attn#1") == ("video", "text")
    # primary audio (1): A1 = text, A2 = video
    want = {"stage1_a": ("text", "video"), "stage1_b": ("video", "text"), "stage2_a": ("audio", "text"),
            "stage2_b": ("audio", "video")}
    for head, pair in want.items():
        assert had.map_modalities(f"{head}/transformer/layer_0/attn", primary=1) == pair
    assert had.map_modalities("stage2_b/transformer/layer_0/attn", primary=0) == ("text", "video")
    with pytest.raises(ValueError, match="stage1_a"):
        had.map_modalities("stage1_a/transformer/layer_0/attn")  # HCT-DMG needs its primary


def test_kl_to_uniform_is_log_keys_minus_entropy_over_valid_queries():
    p = np.zeros((2, 3, 4, 5))
    p[0, :, :, :2] = 0.5          # uniform over example 0's 2 valid keys: KL 0
    p[1, :, :, 0] = 1.0           # one-hot over example 1's 5 keys: KL log 5
    p[1, :, 3] = 0.2              # ... except its last query (masked out below)
    keys = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    queries = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_allclose(had.kl_to_uniform(p, keys, queries), [0.0, np.log(5)], atol=1e-12)


def test_subset_means_split_by_the_incongruent_ids():
    keys = ["a", "b", "c", "d", "e"]
    got = had.subset_means(np.array([1.0, 2.0, 3.0, 4.0, 6.0]), keys, {"b", "e"})
    assert got == pytest.approx({"congruent": (1 + 3 + 4) / 3, "incongruent": 4.0})
    assert np.isnan(had.subset_means(np.ones(2), ["a", "b"], set())["incongruent"])
    with pytest.raises(ValueError, match="3 values for 2"):
        had.subset_means(np.ones(3), ["a", "b"], {"a"})


def test_knob_config_points_at_the_benchmark_with_that_incongruity(tmp_path):
    c = runner.build_config(experiments.Run("m", "mult", synthetic={"incongruity": 0.3, "audio_noise": 0.5}),
                            "tiny", str(tmp_path), {})
    base = c.dataset.name
    for value, slug in ((0.0, "audio_noise-0.5+incongruity-0"), (1.0, "audio_noise-0.5+incongruity-1")):
        k = had.knob_config(c, value, str(tmp_path))
        assert k.dataset.synthetic.incongruity == value and k.dataset.synthetic.audio_noise == 0.5
        assert k.dataset.root == os.path.join(str(tmp_path), "data", f"{base}__{slug}")
        assert k.dataset.bert_path == os.path.join(k.dataset.root, "bert")
    assert c.dataset.synthetic.incongruity == 0.3  # the run's own config is left alone
    # the trained run's own data: the runner's folder for the same knobs
    assert had.knob_config(c, 0.3, str(tmp_path)).dataset.root == c.dataset.root


# ------------------------------------------------------------------ kuda_attention_viz

def test_weight_stats_and_top_examples_by_hand():
    r = np.array([[0.5, 0.3, 0.2],    # text dominates; generator: text
                  [0.2, 0.5, 0.3],    # audio; generator: audio
                  [0.2, 0.6, 0.2],    # audio; generator: video
                  [0.3, 0.3, 0.4]])   # video; generator: video
    err = np.array([0.1, -0.2, 0.4, 0.3])
    dominant = np.array([0, 1, 2, 2])
    s = viz.weight_stats(r, err, dominant)
    assert s["audio"]["share"] == pytest.approx(0.5) and s["video"]["share"] == pytest.approx(0.25)
    assert s["audio"]["mae_dominant"] == pytest.approx(0.3)
    assert s["audio"]["mean"] == pytest.approx(0.425) and s["audio"]["spread"] == pytest.approx(np.std(r[:, 1]))
    assert s["audio"]["lift"] == pytest.approx(0.5 - (0.3 + 0.6 + 0.3) / 3)
    assert s["video"]["found"] == pytest.approx(0.5) and s["text"]["found"] == pytest.approx(1.0)
    assert "lift" not in viz.weight_stats(r, err, None)["text"]
    keys = ["k0", "k1", "k2", "k3"]
    assert viz.top_examples(r, keys, "audio") == [2, 1]  # largest audio weight first
    assert viz.top_examples(r, keys, "audio", k=1) == [2]
    assert viz.top_examples(r, keys, "video") == [3]


def test_generator_dominant_follows_the_ids(tmp_path):
    os.makedirs(tmp_path / "Processed")
    split = {"id": ["test00000$_$0", "test00001$_$0", "test00002$_$0"], "dominant": np.array([2, 0, 1])}
    with open(tmp_path / "Processed" / "unaligned.pkl", "wb") as f:
        pickle.dump({"train": {}, "valid": {}, "test": split}, f)
    c = ml_collections.ConfigDict({"dataset": {"format": "mmsa", "root": str(tmp_path), "synthetic": {"seed": 0}}})
    got = viz.generator_dominant(c, ["test00001$_$0", "test00002$_$0", "test00000$_$0"])
    np.testing.assert_array_equal(got, [0, 1, 2])
    c.dataset.synthetic = {}
    assert viz.generator_dominant(c, ["test00001$_$0"]) is None  # a real release: no record


# ------------------------------------------------------------------ kuda_cross_dataset / evaluate_on

def test_on_dataset_keeps_the_model_and_refuses_other_sizes():
    c = kuda.get_config("tiny")
    c.dataset.num_buckets = 1
    other = cross.other_dataset(c, "/tmp/out", "tiny")
    assert other.synthetic.seed == c.dataset.synthetic.seed + 1 and other.root == "/tmp/out/data/" + other.name
    t = on_dataset(c, other)
    assert t.dataset.root == other.root and t.dataset.name == other.name
    for k in ("max_len", "num_buckets", "bert_path"):
        assert t.dataset[k] == c.dataset[k]  # the trained model's lengths, buckets and text encoder
    assert c.dataset.root != other.root and t.model == c.model
    with pytest.raises(ConfigError, match=r"'synthetic_mmsa_tiny' on 'synthetic_mmsa_tiny_knowledge'.*feat_dims"):
        on_dataset(c, datasets.dataset("synthetic_mmsa_tiny_knowledge"))  # audio/video 7/4, not 6/5
    with pytest.raises(ConfigError, match="task"):
        on_dataset(c, datasets.dataset("synthetic_tiny"))  # an intent (classification) dataset


def test_real_pairs_with_other_feature_sizes_fail_before_training(tmp_path):
    exp = experiments.get("kuda_cross_dataset")
    with pytest.raises(ConfigError, match=r"'mosi' on 'mosei'.*\{'audio': 5, 'video': 20\} vs \{'audio': 74"):
        runner.run_experiment(exp, preset="mosi", seeds=[0], out=str(tmp_path / "x"), argv=[])
    assert not os.path.exists(tmp_path / "x")  # nothing trained, nothing written


@pytest.mark.slow
def test_evaluate_on_a_copy_of_the_dataset_scores_as_its_own_evaluation(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory)
    workdir, config = run["workdir"], run["config"]
    before = {n: os.path.getmtime(os.path.join(workdir, n)) for n in os.listdir(workdir)}
    root = str(tmp_path / "copy")
    shutil.copytree(run["root"], root, ignore=shutil.ignore_patterns("prepared*"))
    ds = copy.deepcopy(config.dataset)
    ds.root, ds.name, ds.bert_path = root, "copy", "elsewhere"
    got = evaluate_on(config, workdir, ds, ("test",))["test"]
    with open(os.path.join(workdir, "eval_test.json")) as f:
        want = json.load(f)["metrics"]
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    assert {n: os.path.getmtime(os.path.join(workdir, n)) for n in os.listdir(workdir)} == before  # nothing written
