"""The benchmark scripts run and print JSON lines; their extra implementations are exact."""
from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from benchmarks.hyena import direct_causal_conv, unfold_einsum_dynamic_conv
from mmfuse_jax.layers import hyena


def test_benchmark_implementations_agree():
    rng = np.random.default_rng(0)
    u, h = jnp.asarray(rng.standard_normal((2, 33, 6)), jnp.float32), jnp.asarray(rng.standard_normal((33, 6)),
                                                                                 jnp.float32)
    np.testing.assert_allclose(direct_causal_conv(u, h), hyena.fft_causal_conv(u, h), rtol=1e-4, atol=1e-4)
    x, w = jnp.asarray(rng.standard_normal((2, 9, 12)), jnp.float32), jnp.asarray(rng.standard_normal((2, 9, 3, 5)),
                                                                                 jnp.float32)
    np.testing.assert_allclose(unfold_einsum_dynamic_conv(x, w), hyena.dynamic_short_conv_reference(x, w),
                               rtol=1e-5, atol=1e-5)


def test_hyena_benchmark_cli_emits_json_lines():
    r = subprocess.run([sys.executable, "-m", "benchmarks.hyena", "--batch=2", "--dim=6", "--lengths=16,33",
                        "--reps=1", "--short_len=5"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    impls = {rec.get("impl") for rec in records}
    assert {"fft_causal_conv", "direct_depthwise_conv", "dynamic_shift_add", "dynamic_vmap_reference",
            "dynamic_unfold_einsum"} <= impls
    summary = records[-1]
    assert summary["summary"] and set(summary["direct_over_fft"]) == {"16", "33"}
    assert all(rec["fwd"]["median_s"] > 0 for rec in records if "impl" in rec)


def test_train_step_benchmark_over_models_writes_records_and_table(tiny_synthetic, tmp_path):
    """benchmarks.all_models -> benchmarks.train_step in a fresh process: a full JSON record per
    model (no recompilation after warm-up, MFU a fraction, the pipeline measured) and the table."""
    out = tmp_path / "bench.jsonl"
    r = subprocess.run([sys.executable, "-m", "benchmarks.all_models", "--models=text_only,nope", "--preset=tiny",
                        "--steps=2", "--batch_size=8", f"--out={out}", f"--set=dataset.root={tiny_synthetic}",
                        f"--set=dataset.bert_path={tiny_synthetic}/bert", "--set=dataset.synthetic={}",
                        f"--set=dataset.prepared_dir={tmp_path}/prepared"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert "error" in lines[1] and lines[1]["model"] == "nope"  # a failing model is reported, not fatal
    rec = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rec) == 1 and rec[0]["model"] == "text_only" and rec[0]["batch_size"] == 8
    assert 1 <= rec[0]["compile_count"] <= rec[0]["num_buckets"]
    assert rec[0]["flops_per_step"] > 0 and 0 < rec[0]["mfu"] < 1.5
    assert rec[0]["pipeline_examples_per_s"] > 0 and rec[0]["pipeline_first_epoch_examples_per_s"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert table.startswith("| model |") and "| text_only | tiny | 8 |" in table


def test_padding_benchmark_auto_buckets_waste_less(tmp_path):
    from benchmarks import padding

    records = padding.main(["--n=300", "--seeds=0", f"--out={tmp_path}/p.jsonl"])
    by = {r["scheme"]: r for r in records if "scheme" in r}
    assert by["auto"]["padded_fraction"] < by["fixed"]["padded_fraction"]
    assert len(by["auto"]["shapes"]) <= 4 and by["auto"]["buckets"][-1] == 48
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 5
    # the exact bound: no 4 lengths pad less than it, and auto's 4 lengths are no better than it
    import itertools

    import numpy as np

    lengths = padding.mintrec_like_lengths(300, 48, 0)
    brute = min(1 - lengths.sum() / np.array(b + (48,))[np.searchsorted(b + (48,), lengths)].sum()
                for b in itertools.combinations(range(3, 48), 3))
    assert abs(by["auto"]["bound"]["4"] - brute) < 1e-12
    assert by["auto"]["bound"]["6"] < by["auto"]["bound"]["4"] <= by["auto"]["padded_fraction"]


def test_device_suite_parts_run_in_order_and_choices_are_checked(monkeypatch):
    """--parts picks parts in the suite's order, the long train-step part last (a GPU session may split the
    suite over two calls); --models picks train_step's models; unknown names are errors naming the choices."""
    import argparse

    from benchmarks import device_suite
    from mmfuse_jax import registry, runtime

    def args(**kw):
        base = {"smoke": False, "official_dir": "/k", "torch_python": "", "set": [], "data_dir": "/d", "models": "",
                "parts": ",".join(device_suite.PARTS)}
        return argparse.Namespace(**{**base, **kw})

    every = [(part, name) for part, name, _, _ in device_suite._parts(args(), "gpu")]
    assert [p for p, _ in every] == ["kuda", "kuda", "hyena", "equality"] + ["train_step"] * 2 * len(registry.names())
    assert ("train_step", "kuda/bfloat16") in every and "--torch_device=cuda" in device_suite._parts(
        args(), "gpu")[0][2]
    chosen = device_suite._parts(args(parts="train_step,hyena", models="kuda,mult"), "gpu")
    assert [(p, n) for p, n, _, _ in chosen] == [("hyena", "fft_vs_direct")] + [
        ("train_step", f"{m}/{d}") for d in ("float32", "bfloat16") for m in ("kuda", "mult")]
    with pytest.raises(SystemExit, match="unknown"):
        device_suite._parts(args(models="kuda,mulT"), "gpu")
    monkeypatch.setattr(runtime, "tune_host", lambda: {})  # the suite's host settings stay out of this process
    with pytest.raises(SystemExit) as e:
        device_suite.main(["--parts=hyena,gpu"])
    assert e.value.code == 2


@pytest.mark.slow
def test_device_suite_smoke_runs_every_part(tiny_synthetic, tmp_path):
    """benchmarks/device_suite.sh --smoke: every part runs (KuDA recorded as skipped) into one JSON file."""
    import os

    out = tmp_path / "device.jsonl"
    r = subprocess.run(["bash", "benchmarks/device_suite.sh", "--smoke", f"--out={out}",
                        f"--set=dataset.root={tiny_synthetic}", f"--set=dataset.bert_path={tiny_synthetic}/bert",
                        "--set=dataset.synthetic={}", f"--set=dataset.prepared_dir={tmp_path}/prepared"],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    parts = {(rec["part"], rec.get("name")): rec for rec in recs}
    assert "skipped" in parts[("kuda", None)]
    for key in [("train_step", "text_only/float32"), ("train_step", "text_only/bfloat16"),
                ("hyena", "fft_vs_direct"), ("equality", "1_vs_n_devices")]:
        assert parts[key]["rc"] == 0, parts[key]
    step = parts[("train_step", "text_only/bfloat16")]["results"][-1]
    assert step["compute_dtype"] == "bfloat16" and 0 < step["mfu"]
    assert parts[("hyena", "fft_vs_direct")]["results"][-1]["summary"]


def test_init_benchmark_times_both_modes_and_checks_they_agree(tmp_path):
    """benchmarks.init_compile: each mode in its own fresh process, one record each and a summary whose
    parameters' hashes agree (the pieces are the jitted init's numbers)."""
    out = tmp_path / "init.jsonl"
    r = subprocess.run([sys.executable, "-m", "benchmarks.init_compile", "--models=early_fusion:tiny", "--rounds=1",
                        f"--data={tmp_path / 'data'}", f"--out={out}"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["mode"] for rec in records[:2]) == ["jit", "pieces"]
    assert records[0]["hash"] == records[1]["hash"] and records[0]["params"] > 10
    assert records[-1]["summary"] and records[-1]["equal"] is True and records[-1]["speedup"] > 0


def test_step_benchmark_times_both_updates_and_compares_their_params(tmp_path):
    """benchmarks.step_compile: per-leaf and grouped update each in a fresh process; the grouped program is
    smaller and its parameters after the steps are the per-leaf ones up to float rounding."""
    out = tmp_path / "step.jsonl"
    r = subprocess.run([sys.executable, "-m", "benchmarks.step_compile", "--models=text_only:tiny", "--rounds=1",
                        "--steps=2", f"--data={tmp_path / 'data'}", f"--out={out}"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rec["mode"] for rec in records[:2]) == ["grouped", "per_leaf"]
    assert all(rec["compile_s"] > 0 and rec["step_s"] > 0 and rec["param_arrays"] > 10 for rec in records[:2])
    summary = records[-1]
    assert summary["summary"] and summary["grouped_hlo_lines"] < summary["per_leaf_hlo_lines"], summary
    assert 0 <= summary["max_param_difference"] < 1e-4 and summary["compile_speedup"] > 0


def test_step_profile_sums_op_events_per_step_and_counts_concurrency():
    """benchmarks.step_profile.summarize on hand-made thunk events: per-step sums by kind and group, and the
    time 0, 1 and 2+ threads spent inside ops (while-loop events, which contain other ops, are skipped)."""
    from benchmarks.step_profile import group_of, op_names, summarize

    names = op_names('  %ynn_fusion.3 = f32[2]{0} fusion(%a), metadata={op_name="jit(traced)/transpose(jvp(M))/'
                     'layer_3/dense/dot_general" stack_frame_id=1}\n  ROOT %copy.1 = f32[2]{0} copy(%b), '
                     'metadata={op_name="jit(traced)/jvp(M)/block_0/x"}')
    assert names == {"ynn_fusion.3": "jit(traced)/transpose(jvp(M))/layer_3/dense/dot_general",
                     "copy.1": "jit(traced)/jvp(M)/block_0/x"}
    assert group_of(names["ynn_fusion.3"]) == "bwd traced/M/layer_N/dense/dot_general"
    ev = lambda op, ts, dur: {"ts": ts, "dur": dur, "args": {"hlo_op": op}}  # noqa: E731
    events = [ev("ynn_fusion.3", 0, 4e6), ev("copy.1", 1e6, 2e6), ev("dot_general.7", 6e6, 2e6),
              ev("while.2", 0, 8e6)]
    s = summarize(events, names, steps=2, top=5)
    assert s["op_seconds_per_step"] == 4.0
    assert s["by_kind_s"] == {"dot (YNNPACK)": 2.0, "copy": 1.0, "dot (generic)": 1.0}
    assert s["threads_in_ops_s"] == {"0": 1.0, "1": 2.0, "2+": 1.0}  # 0-1, 3-4, 6-8 s alone; 1-3 s both; 4-6 s none
    assert s["top_groups_s"][0] == ["bwd traced/M/layer_N/dense/dot_general", 2.0]


def test_step_profile_cli_traces_a_tiny_step(tiny_synthetic, tmp_path, monkeypatch):
    """The CLI in-process (host tuning left to the worker) on text_only tiny: a trace with op events whose
    ops the compiled HLO names, dots among them, and the JSON line appended."""
    from benchmarks import step_profile
    from mmfuse_jax import runtime

    monkeypatch.setattr(runtime, "tune_host", lambda: {})
    out = tmp_path / "profile.jsonl"
    rec = step_profile.main(["--config=configs/text_only.py:tiny", "--steps=1", "--warmup=1", "--top=5",
                             f"--set=dataset.root={tiny_synthetic}", f"--set=dataset.bert_path={tiny_synthetic}/bert",
                             "--set=dataset.synthetic={}", f"--set=dataset.prepared_dir={tmp_path}/prepared",
                             "--set=batch_size=8", f"--out={out}"])
    assert rec["step_s_median"] > 0 and rec["hlo_ops_named"] > 20 and rec["op_events"] > 20, rec
    assert any(k.startswith("dot") for k in rec["by_kind_s"]) and 0 < rec["op_seconds_per_step"], rec
    assert len(rec["top_groups_s"]) == 5 and any(g.startswith("bwd ") for g, _ in rec["top_groups_s"]), rec
    assert json.loads(out.read_text().splitlines()[-1])["top_groups_s"] == rec["top_groups_s"]


def _names(path: str) -> dict[str, str]:
    """{normalised name: the line's version spec} of a requirements-style file (comments dropped)."""
    import re

    out = {}
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", line).groups()
                out[re.sub(r"[-_.]+", "-", name).lower()] = spec.strip()
    return out


def test_device_wheels_carry_every_requirement_the_gpu_image_lacks():
    """A GPU machine has no package index: what requirements.txt needs is either in its image
    (benchmarks/device_image.txt) or carried (benchmarks/device_wheels.txt, pinned, each pin within
    requirements.txt's bounds); only the notebook test's packages are left out (the device suite runs none)."""
    from packaging.specifiers import SpecifierSet

    bench = f"{REPO}/benchmarks"
    required, image, carried = _names(f"{REPO}/requirements.txt"), _names(f"{bench}/device_image.txt"), \
        _names(f"{bench}/device_wheels.txt")
    notebook_only = {"nbformat", "nbclient", "ipykernel"}
    missing = sorted(set(required) - set(image) - set(carried) - notebook_only)
    assert not missing, f"add to benchmarks/device_wheels.txt: {missing}"
    assert all(spec.startswith("==") for spec in carried.values()), carried
    for name, spec in carried.items():
        if name in required:
            assert SpecifierSet(required[name]).contains(spec[2:]), (name, spec, required[name])


def test_device_suite_without_the_dependencies_or_their_wheels_says_what_to_do(tmp_path):
    """An interpreter without this project's packages (as on the GPU machines) and no .whl/ to install them
    from: exit 2 with what to run, before anything else runs."""
    import os

    bare = tmp_path / "python"  # the venv's interpreter itself, without any site-packages: no grain, TFDS or flax
    bare.write_text(f"#!/bin/sh\nexec {os.path.realpath(sys.executable)} -S \"$@\"\n")
    bare.chmod(0o755)
    r = subprocess.run(["bash", "benchmarks/device_suite.sh", "--smoke"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHON": str(bare), "PYTHONPATH": "",
                                        "MMFUSE_DEVICE_WHEELS": str(tmp_path / "no_wheels")})
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "benchmarks/device_wheels.sh" in r.stderr and "Traceback" not in r.stderr
