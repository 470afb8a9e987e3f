"""Every registered experiment runs end to end on its `tiny` preset (one seed, one epoch) and writes its
table; the CLI lists them one line each."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import pytest
from conftest import REPO

from mmfuse_jax import experiments
from mmfuse_jax.experiments import runner
from mmfuse_jax.training.experiment import abstract_params, build

# Smallest settings (every run): one epoch, one length bucket (one compiled shape per step function:
# on 2 CPU cores compiling costs more than the steps); KuDA without stage 1 where the experiment does
# not measure stage 1 (its three stage-1 runs would triple the time). Every experiment shares one run
# store, as a user running several would (`--store`): a config two experiments train (the KuDA,
# DyKen-Hyena defaults) is trained once, by whichever worker gets there first.
COMMON = ["num_epochs=1", "dataset.num_buckets=1"]
NO_STAGE1 = ["stage1.enabled=False"]
SMOKE = {"kuda_ratio_modes": NO_STAGE1, "kuda_no_nce": NO_STAGE1, "kuda_fusion_variants": NO_STAGE1}
# Experiments of several runs train a subset (`--runs`): each switch value and each dataset once, and no
# run whose switch another test here or the model's own tests already train (named beside it). Each run
# left out is still configured and its model built (abstract init: traced, not compiled) below.
RUNS = {"dyken_kernels": ["mintrec_groups_replace", "mintrec2_channel_add"],
        "dyken_vs_concat": ["mintrec_concat_attention", "mintrec2_dynamic_kernels"],
        "dyken_on_emotion": ["dyken", "text_only"],          # concat_attention: dyken_vs_concat
        "hct_noise_gating": ["clean", "noisy_audio"],        # noisy_video: the same knob on the other modality
        "mvcl_coarse_view": ["mintrec_text_queried", "mintrec2_per_modality"],
        "kuda_ratio_modes": ["paper", "attention_fixed"],
        "kuda_fusion_variants": ["attention", "add"],        # concat: test_kuda_fusion.test_concat_variant_trains
        "kuda_knowledge": ["target_stage1", "no_stage1"]}    # knowledge: test_kuda_stages.test_both_stages_end_to_end


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One working folder for every experiment, so the presets' synthetic data are written once."""
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.slow
@pytest.mark.parametrize("name", experiments.names())
def test_experiment_runs_end_to_end_on_tiny(name, workspace, monkeypatch):
    """Through the CLI a user runs, in its own process: one CPU device (the suite's in-process tests see 4;
    sharded = single-device is tested in tests/training), which on 2 cores makes these runs a quarter faster."""
    out, store = str(workspace / name), str(workspace / "store")
    settings = [*COMMON, *SMOKE.get(name, [])]
    only = RUNS.get(name, [])
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.experiments", name, "--preset=tiny", "--seeds=0",
                        f"--out={out}", f"--store={store}", *[a for s in settings for a in ("--set", s)],
                        *([f"--runs={','.join(only)}"] if only else [])],
                       cwd=workspace, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = experiments.get(name)
    with open(os.path.join(out, "results.json")) as f:
        record = json.load(f)
    header, rows = record["header"], record["rows"]
    assert len(rows) >= 1 and all(len(row) == len(header) for row in rows)
    runs = exp.runs("tiny")
    assert set(record["runs"]) == {run.name for run in runs}
    table_line = "| " + " | ".join(header) + " |"
    results_md = open(os.path.join(out, "results.md")).read()
    assert table_line in results_md and table_line in r.stdout
    if not only:
        assert all(row[1] != "–" for row in rows), rows  # every row has its first metric
        return
    # a row per run: the trained ones have their metric (the others may have one from the shared store)
    assert sum(row[1] != "–" for row in rows) >= len(only), rows
    untrained = [run for run in runs if run.name not in only]
    assert record["untrained"] == [run.name for run in untrained] and "Not trained by this invocation" in results_md
    monkeypatch.chdir(workspace)  # where the CLI ran: the presets' data folders are relative
    for run in untrained:  # configured and built: the model's params at the run's switches
        config = runner.build_config(run, "tiny", out, runner.parse_sets(settings), data=store)
        exp_run = build(config, data=False)
        assert jax.tree_util.tree_leaves(abstract_params(exp_run)), run.name


def test_store_gives_equal_configs_one_entry_and_keeps_real_folders(tmp_path):
    from configs import kuda

    run_a, run_b = experiments.Run("a", "kuda"), experiments.Run("b", "kuda", {"model.nce_weight": 0.0})
    out, store = str(tmp_path / "out"), str(tmp_path / "store")
    same = runner.run_folder(run_a, kuda.get_config("tiny"), out, store)
    assert runner.run_folder(experiments.Run("a2", "kuda"), kuda.get_config("tiny"), out, store) == same
    other = runner.build_config(run_b, "tiny", out, {}, data=store)
    assert runner.run_folder(run_b, other, out, store) != same
    assert os.path.realpath(os.path.join(out, "runs", "a")) == os.path.realpath(same)
    # the run's config changes: its name now links to the new entry, the old entry stays
    moved = runner.run_folder(run_a, other, out, store)
    assert os.path.realpath(os.path.join(out, "runs", "a")) == os.path.realpath(moved) and os.path.isdir(same)
    # a field added later with its old behaviour as default leaves the entry (and its runs) found
    older = kuda.get_config("tiny")
    with older.unlocked():
        del older.dataset.synthetic["incongruity"], older.model["fusion"], older["init_from"]
    assert runner.config_key(older) == runner.config_key(kuda.get_config("tiny"))
    older.dataset.synthetic.audio_noise = 0.5
    assert runner.config_key(older) != runner.config_key(kuda.get_config("tiny"))
    real = tmp_path / "out" / "runs" / "c"
    real.mkdir(parents=True)
    assert runner.run_folder(experiments.Run("c", "kuda"), other, out, store) == str(real)
    assert runner.run_folder(run_a, other, out, None) == os.path.join(out, "runs", "a")


def test_list_prints_one_line_per_experiment():
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.experiments", "--list"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == experiments.names()


def test_unknown_experiment_and_bad_set_are_one_error_line(tmp_path):
    for args, message in ((["no_such", f"--out={tmp_path}"], "unknown experiment 'no_such'"),
                          (["kuda_no_nce", f"--out={tmp_path}", "--preset=tiny", "--runs=no_nce,nce_1"],
                           "has no run 'nce_1' at preset 'tiny': expected some of ['nce_0.1', 'no_nce']"),
                          (["kuda_no_nce", f"--out={tmp_path}", "--set", "model.no_such=1"], "does not exist")):
        r = subprocess.run([sys.executable, "-m", "mmfuse_jax.experiments", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode == 2 and len(errors) == 1 and message in errors[0], r.stderr
