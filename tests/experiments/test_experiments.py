"""Every registered experiment runs end to end on its `tiny` preset (one seed, one epoch) and writes its
table; the CLI lists them one line each."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from mmfuse_jax import experiments, runtime
from mmfuse_jax.data import ensure_dataset
from mmfuse_jax.experiments import __main__ as experiments_cli
from mmfuse_jax.experiments import runner
from mmfuse_jax.training import loop, stages

# Smallest settings (every run): one epoch, one length bucket (one compiled shape per step function:
# on 2 CPU cores compiling costs more than the steps), one device (below); KuDA without stage 1 where the
# experiment does not measure stage 1 (its three stage-1 runs would triple the time).
COMMON = ["num_epochs=1", "dataset.num_buckets=1", "mesh.devices=1"]
NO_STAGE1 = ["stage1.enabled=False"]
SMOKE = {"kuda_ratio_modes": NO_STAGE1, "kuda_no_nce": NO_STAGE1, "kuda_fusion_variants": NO_STAGE1}
# Every experiment shares one run store, as a user running several would (`--store`): a config several
# experiments have (each model's default) is trained once, by whichever test gets there first, and the others
# take its results from the store. An experiment of several runs trains a subset (`--runs`), as few distinct
# configs as the suite can: tracing and compiling its steps is most of a tiny run's time on 2 cores (two
# KuDA runs: 30 s of 42). Every run left out is configured and its train step traced abstractly, each stage
# (`loop.abstract_run`: forward, backward and update at the run's switches, without compiling); the switches
# themselves are checked numerically (numerics) or trained (trains) in the tests named beside them.
RUNS = {"dyken_kernels": ["mintrec_groups_replace"],     # the default; kernel modes: test_dyken_hyena (numerics)
        "dyken_vs_concat": ["mintrec_dynamic_kernels"],  # the default; concat: test_dyken_concat (trains)
        "dyken_on_emotion": ["dyken"],                   # the emotion set: test_dyken_emotion (trains)
        "hct_attention_distortion": ["hct_dmg"],         # MulT: test_mult (trains)
        "hct_gate_freeze": ["continuous"],               # frozen: test_hct_dmg_stages (trains, CLI)
        "hct_noise_gating": ["clean", "noisy_audio"],    # one program: the noise is a data knob
        "mvcl_coarse_view": ["mintrec_per_modality"],    # the default; text-queried: test_mvcl_daf (numerics)
        "mvcl_transfer": ["mintrec", "finetune"],        # scratch: finetune's program from a fresh init
        "kuda_ratio_modes": ["official"],                # the default; the modes: test_kuda (numerics)
        "kuda_fusion_variants": ["attention"],           # the default; concat: test_kuda_fusion (trains)
        "kuda_knowledge": ["no_stage1"],                 # knowledge: test_kuda_stages (trains)
        "kuda_no_nce": ["nce_0.1"],                      # the default; nce_weight 0 is a loss term's weight
        "kuda_text_encoders": ["bert"]}                  # RoBERTa: test_roberta (trains)
# Model families interleaved, so that the two xdist workers seldom wait for the same store entry at once.
FAMILIES = [[n for n in experiments.names() if n.startswith(p)] for p in ("kuda", "dyken", "mvcl", "hct")]
ORDER = [name for group in itertools.zip_longest(*FAMILIES) for name in group if name]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One working folder for every experiment, so the presets' synthetic data are written once."""
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.slow
@pytest.mark.parametrize("name", ORDER)
def test_experiment_runs_end_to_end_on_tiny(name, workspace, monkeypatch, capsys):
    """The CLI a user runs (`python -m mmfuse_jax.experiments`), called in the test's process: a subprocess
    would start Python and import JAX again (~2 s per experiment on a quiet 2-core machine, 2-3x that under
    the suite's load), and trace again what an earlier test of this worker traced. One CPU device (the in-process
    tests see 4; sharded = single-device is tested in tests/training): a quarter faster on 2 cores. The
    command line itself, as a separate process, is tested below (--list, its errors)."""
    out, store = str(workspace / name), str(workspace / "store")
    settings = [*COMMON, *SMOKE.get(name, [])]
    only = RUNS.get(name, [])
    monkeypatch.chdir(workspace)  # the presets' data folders are relative
    # the host tuning is for a process of its own (its allocator settings and dispatch mode would stay in
    # this test process after the call); tests/test_runtime.py tests it
    monkeypatch.setattr(runtime, "tune_host", lambda: {})
    try:
        experiments_cli.main([name, "--preset=tiny", "--seeds=0", f"--out={out}", f"--store={store}",
                              *[a for s in settings for a in ("--set", s)],
                              *([f"--runs={','.join(only)}"] if only else [])])
    except SystemExit as e:
        captured = capsys.readouterr()
        pytest.fail(f"exit {e.code}: {captured.out[-3000:]}{captured.err[-3000:]}")
    stdout = capsys.readouterr().out
    exp = experiments.get(name)
    with open(os.path.join(out, "results.json")) as f:
        record = json.load(f)
    header, rows = record["header"], record["rows"]
    assert len(rows) >= 1 and all(len(row) == len(header) for row in rows)
    runs = exp.runs("tiny")
    assert set(record["runs"]) == {run.name for run in runs}
    table_line = "| " + " | ".join(header) + " |"
    results_md = open(os.path.join(out, "results.md")).read()
    assert table_line in results_md and table_line in stdout
    if not only:
        assert all(row[1] != "–" for row in rows), rows  # every row has its first metric
        return
    # a row per run: the trained ones have their metric (the others may have one from the shared store)
    assert sum(row[1] != "–" for row in rows) >= len(only), rows
    untrained = [run for run in runs if run.name not in only]
    assert record["untrained"] == [run.name for run in untrained] and "Not trained by this invocation" in results_md
    for run in untrained:  # configured, and every stage's train step traced at the run's switches
        config = runner.build_config(run, "tiny", out, runner.parse_sets(settings), data=store)
        for planned in stages.plan(config, ""):
            ensure_dataset(planned.config.dataset)  # a run of another dataset (MIntRec2.0, stage-1 knowledge)
        traced = loop.abstract_run(config)
        assert traced and all(int(state.step.size) == 1 and metrics for state, metrics in traced.values()), run.name


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
