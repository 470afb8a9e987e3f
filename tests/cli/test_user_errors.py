"""Every user mistake on a finished run gets one `error:` line, exit code 2, and leaves the run intact.

One tiny early_fusion run is trained and evaluated once per module; each case works on a copy of it
and checks: the exit code, exactly one ``error:`` line naming the flag/file/key, no traceback, and
every file of the run folder byte-identical afterwards (checksums).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

CONFIG = f"{REPO}/configs/early_fusion.py:tiny"


def _cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False, **kw)


def checksums(folder: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def data_flags(root: str) -> list[str]:
    return [f"--config.dataset.root={root}", f"--config.dataset.bert_path={root}/bert",
            "--config.dataset.synthetic={}", "--config.num_epochs=1", "--config.batch_size=16",
            "--config.eval_batch_size=16", "--config.dataset.num_buckets=1"]  # one shape: one compile


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_synthetic):
    workdir = str(tmp_path_factory.mktemp("finished") / "ef")
    flags = data_flags(tiny_synthetic)
    r = _cli("train.py", f"--config={CONFIG}", f"--workdir={workdir}", *flags)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _cli("eval.py", f"--config={CONFIG}", f"--workdir={workdir}", *flags)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"workdir": workdir, "flags": flags, "root": tiny_synthetic}


@pytest.fixture
def run_copy(finished_run, tmp_path):
    dst = str(tmp_path / "ef")
    shutil.copytree(finished_run["workdir"], dst)
    return {**finished_run, "workdir": dst, "before": checksums(dst)}


def assert_one_error(r, *needles: str, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_intact(run) -> None:
    assert checksums(run["workdir"]) == run["before"]


def test_eval_with_another_models_config_leaves_the_run_intact(run_copy):
    r = _cli("eval.py", f"--config={REPO}/configs/text_only.py:tiny", f"--workdir={run_copy['workdir']}",
             *run_copy["flags"])
    assert_one_error(r, "model_name='early_fusion', you asked for 'text_only'", "new --workdir")
    assert_intact(run_copy)
    ok = _cli("eval.py", f"--config={CONFIG}", f"--workdir={run_copy['workdir']}", *run_copy["flags"])
    assert ok.returncode == 0, ok.stderr[-3000:]


@pytest.mark.parametrize("override,needle", [
    ("--config.model.hidden=32", "model.hidden=64, you asked for 32"),
    ("--config.optimizer.lr=0.01", "you asked for 0.01"),
])
def test_train_rerun_with_a_different_model_is_refused(run_copy, override, needle):
    r = _cli("train.py", f"--config={CONFIG}", f"--workdir={run_copy['workdir']}", *run_copy["flags"], override)
    assert_one_error(r, needle)
    assert_intact(run_copy)


@pytest.mark.parametrize("args,needles", [
    (["--config.batchsize=8"], ["--config.batchsize", "did you mean", "batch_size"]),
    (["--config.batch_size=-4"], ["config.batch_size=-4", ">= 1"]),
    (["--config.batch_size=0"], ["config.batch_size=0"]),
    (["--config.num_epochs=0"], ["config.num_epochs=0"]),
    (["--config.optimizer.lr=-0.001"], ["config.optimizer.lr=-0.001", "> 0"]),
    (["--config.compute_dtype=bfloat61"], ["did you mean 'bfloat16'"]),
])
def test_config_mistakes_are_one_line(run_copy, args, needles):
    r = _cli("train.py", f"--config={CONFIG}", f"--workdir={run_copy['workdir']}", *run_copy["flags"], *args)
    assert_one_error(r, *needles)
    assert_intact(run_copy)


def test_missing_config_file_and_unknown_preset(tmp_path):
    r = _cli("train.py", f"--config={REPO}/configs/nope.py:tiny", f"--workdir={tmp_path}/w")
    assert_one_error(r, "configs/nope.py")
    assert "_ErrorConfig" not in r.stdout
    r = _cli("train.py", f"--config={CONFIG.replace(':tiny', ':nope')}", f"--workdir={tmp_path}/w")
    assert_one_error(r, "unknown preset 'nope'")
    r = _cli("train.py", f"--workdir={tmp_path}/w")
    assert_one_error(r, "--config")
    assert not os.path.exists(tmp_path / "w")


def test_eval_on_missing_folder_or_a_file_creates_nothing(run_copy, tmp_path):
    missing = tmp_path / "never_trained"
    r = _cli("eval.py", f"--config={CONFIG}", f"--workdir={missing}", *run_copy["flags"])
    assert_one_error(r, str(missing))
    assert not missing.exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    r = _cli("eval.py", f"--config={CONFIG}", f"--workdir={a_file}", *run_copy["flags"])
    assert_one_error(r, "a_file")
    assert a_file.read_text() == "x"


def test_predict_output_is_a_directory(run_copy, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "thanks a lot"}\n')
    r = _cli("predict.py", f"--workdir={run_copy['workdir']}", f"--input={tmp_path}/in.jsonl",
             f"--output={tmp_path}")
    assert_one_error(r, str(tmp_path))
    assert_intact(run_copy)


def test_help_exits_zero():
    for script in ("train.py", "eval.py"):
        r = _cli(script, "--help")
        assert r.returncode == 0 and "Traceback" not in r.stderr
        assert "early_fusion" in r.stdout



HOLD = """
import sys, time
from mmfuse_jax.training.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_run_in_use_is_refused(run_copy):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run_copy["workdir"]], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for script in ("train.py", "eval.py"):
            r = _cli(script, f"--config={CONFIG}", f"--workdir={run_copy['workdir']}", *run_copy["flags"])
            assert_one_error(r, f"is in use by process {holder.pid} on host")
    finally:
        holder.kill()
        holder.wait()
    r = _cli("eval.py", f"--config={CONFIG}", f"--workdir={run_copy['workdir']}", *run_copy["flags"])
    assert r.returncode == 0, r.stderr[-3000:]  # the killed holder's lock is free again


def test_stale_eval_outputs_are_flagged(run_copy):
    from mmfuse_jax import compare, report, runfiles

    path = os.path.join(run_copy["workdir"], "eval_test.json")
    with open(path) as f:
        rec = json.load(f)
    assert runfiles.stale_outputs(run_copy["workdir"]) == []
    rec["checkpoint_step"] -= 1  # as if the best checkpoint had moved on since this evaluation
    with open(path, "w") as f:
        json.dump(rec, f)
    (why,) = runfiles.stale_outputs(run_copy["workdir"])
    assert "eval_test.json is from checkpoint step" in why
    text = open(report.write_report(run_copy["workdir"])).read()
    assert "**Stale:** eval_test.json" in text
    _, cells = compare.compare([run_copy["workdir"]])
    assert cells[0][0].endswith("(stale)")
