"""SIGKILL one training run at several points, resume it in the same workdir each time, and check
that it ends exactly where an uninterrupted run with the same seed ends.

Everything goes through the real CLI (``python train.py``). Kills are triggered by what the run
leaves on disk, polled every few milliseconds (no sleeps-only timing). Each trigger is the first
sign that the run got to its point, so a run is always killed even when the point itself was too
short to catch; what the kill actually interrupted is checked afterwards and printed (``-s``):

  1. preparing the dataset (TFDS files being written, ``meta.json`` not yet);
  2. mid-epoch between two checkpoints (after step 3 and step 2's checkpoint is whole; checkpoints at
     steps 2 and 4; they are written in the background while training goes on);
  3. writing a mid-epoch checkpoint (Orbax's ``8.orbax-checkpoint-tmp`` folder, before its rename);
  4. dev evaluation (the epoch's last train record is logged, its dev record not yet);
  5. writing the end-of-epoch checkpoint (dev logged and best saved, latest being written);
  6. after the final checkpoint, before the process ends.

The end result must equal the uninterrupted run's: every metrics.jsonl record (throughput aside),
the best checkpoint's step, metadata and params, the final state and the kept checkpoint steps,
bit for bit on CPU. The subprocesses share a JAX persistent compilation cache (in the test's tmp
folder): a resumed process loads its compiled steps instead of compiling them again (the same
executables, so the same numbers): the eight processes of the main test take under 2 min on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO, synthetic_copy

from mmfuse_jax.training.logging import read_metrics

pytestmark = pytest.mark.slow

EPOCHS, BATCH, TRAIN = 3, 16, 96
STEPS_PER_EPOCH = TRAIN // BATCH   # 6: checkpoints every 2 steps mid-epoch, and at 6, 12, 18
FINAL = EPOCHS * STEPS_PER_EPOCH
TMP = ".orbax-checkpoint-tmp"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from mmfuse_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("kill_resume") / "bench")
    return synthetic_copy(root, "mintrec", synthetic.SyntheticSpec(train=TRAIN, dev=32, test=32, bert_hidden=24,
                                                                   bert_heads=2))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The uninterrupted runs' prepared data (prepared once; the dataset config is the same)."""
    return str(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def env():
    # os.environ carries the session's persistent compilation cache (conftest)
    return {**os.environ, "PYTHONUNBUFFERED": "1"}  # a killed run's log is whole


def train_args(bench, workdir, prepared, *extra, config="early_fusion.py:tiny"):
    return ["train.py", f"--config={REPO}/configs/{config}", f"--workdir={workdir}",
            f"--config.dataset.root={bench}", f"--config.dataset.bert_path={bench}/bert",
            f"--config.dataset.prepared_dir={prepared}", f"--config.num_epochs={EPOCHS}",
            f"--config.batch_size={BATCH}", f"--config.eval_batch_size={BATCH}",
            "--config.checkpoint_every_steps=2", "--config.log_every=1", *extra]


def start(args, log_path, env):
    log = open(log_path, "w")  # noqa: SIM115  (closed by output() once the process is gone)
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log, proc.log_path = log, log_path
    return proc


def output(proc) -> str:
    proc.log.close()
    with open(proc.log_path) as f:
        return f.read()


def finish(proc, timeout=300) -> str:
    rc = proc.wait(timeout=timeout)
    out = output(proc)
    assert rc == 0, out[-4000:]
    return out


def kill_when(proc, ready, what: str, timeout=300) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if the run finished first (point not reached)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            out = output(proc)
            assert proc.returncode == 0, f"run failed before '{what}':\n{out[-4000:]}"
            return False
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"'{what}' not reached in {timeout} s:\n{output(proc)[-4000:]}")


def listing(path):
    return os.listdir(path) if os.path.isdir(path) else []


def steps_in(path):
    return sorted(int(d) for d in listing(path) if d.isdigit())


def records(workdir):
    try:
        return read_metrics(workdir)
    except json.JSONDecodeError:  # a line being appended right now: look again at the next poll
        return []


def logged(workdir, step, dev=False):
    return any(r.get("step") == step and (r.get("split") == "dev" if dev else "train_loss" in r)
               for r in records(workdir))


def numbers(workdir):
    """metrics.jsonl without throughput, the one logged value that is not deterministic."""
    return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in read_metrics(workdir)]


def restore_tree(path):
    import orbax.checkpoint as ocp

    return jax.device_get(ocp.StandardCheckpointer().restore(path))


def assert_trees_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigkill_at_every_stage_resumes_to_the_uninterrupted_result(bench, prepared, env, tmp_path):
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    prep = str(tmp_path / "prep_killed")  # the interrupted run prepares its own copy of the data
    finish(start(train_args(bench, ref, prepared), str(tmp_path / "ref.log"), env))
    args = train_args(bench, killed, prep)
    ckpts, best = os.path.join(killed, "checkpoints"), os.path.join(killed, "best")
    end2 = 2 * STEPS_PER_EPOCH

    def saving(step):  # the step's temporary folder, or already the step itself
        return lambda: any(d == str(step) or d.startswith(f"{step}{TMP}") for d in listing(ckpts))

    # (what, trigger, did the kill land inside the point?)
    points = [
        ("preparing the dataset", lambda: any(len(d) == 16 for d in listing(prep)),
         lambda: not os.path.exists(os.path.join(prep, "meta.json"))),
        # (checkpoints are written in the background: "between" = after step 3 with step 2's one whole)
        ("mid-epoch between checkpoints", lambda: logged(killed, 3) and 2 in steps_in(ckpts),
         lambda: 4 not in steps_in(ckpts)),
        ("writing a mid-epoch checkpoint", saving(8), lambda: 8 not in steps_in(ckpts)),
        ("dev evaluation", lambda: logged(killed, end2), lambda: not logged(killed, end2, dev=True)),
        ("writing the end-of-epoch checkpoint", saving(end2), lambda: end2 not in steps_in(ckpts)),
        ("after the final checkpoint", lambda: FINAL in steps_in(ckpts), lambda: True),
    ]
    killed_at = []
    for i, (what, trigger, inside) in enumerate(points):
        proc = start(args, str(tmp_path / f"killed_{i}.log"), env)
        if not kill_when(proc, trigger, what):
            break  # the run ended before this point: nothing left to interrupt
        killed_at.append((what, inside()))
        out = output(proc)
        if i >= 2:  # every run after the first checkpoint resumes from one
            assert "resumed from step" in out, (what, out[-3000:])
    print("killed at (point, inside it):", killed_at)
    out = finish(start(args, str(tmp_path / "killed_last.log"), env))
    assert "resumed from step" in out
    assert len(killed_at) >= 5, killed_at  # only the last point may end before it can be killed

    # Every logged number equals the uninterrupted run's (same seed: bitwise on CPU).
    assert numbers(killed) == numbers(ref)
    assert [r["step"] for r in read_metrics(killed) if r.get("split") == "dev"] == \
        [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    # The same best checkpoint (step, its dev metrics, its params), final state and kept steps.
    assert steps_in(os.path.join(ref, "best")) == steps_in(best) != []
    step = steps_in(best)[-1]
    with open(os.path.join(ref, "best", str(step), "meta", "metadata")) as f1, \
            open(os.path.join(best, str(step), "meta", "metadata")) as f2:
        assert json.load(f1) == json.load(f2)
    assert_trees_equal(restore_tree(os.path.join(ref, "best", str(step), "params")),
                       restore_tree(os.path.join(best, str(step), "params")))
    assert steps_in(os.path.join(ref, "checkpoints")) == steps_in(ckpts) == [FINAL - 2, FINAL]
    assert_trees_equal(restore_tree(os.path.join(ref, "checkpoints", str(FINAL), "state")),
                       restore_tree(os.path.join(ckpts, str(FINAL), "state")))
    for sub in ("best", "checkpoints"):
        assert not [d for d in listing(os.path.join(killed, sub)) if TMP in d], f"unfinished {sub} left behind"

    # eval.py on the resumed run's best checkpoint: its dev numbers are the uninterrupted run's at that step.
    out = finish(start(["eval.py", *args[1:]], str(tmp_path / "eval.log"), env))
    assert "split  " in out and "test" in out, out[-3000:]
    with open(os.path.join(killed, "eval_dev.json")) as f:
        evaluated = json.load(f)["metrics"]
    (at_best,) = [r for r in read_metrics(ref) if r.get("split") == "dev" and r["step"] == step]
    assert evaluated and {k: v for k, v in at_best.items() if k in evaluated} == evaluated, (at_best, evaluated)


def test_resume_between_log_steps_logs_the_same_train_metrics(bench, prepared, env, tmp_path):
    """checkpoint_every_steps=2, log_every=3, one epoch: checkpoints at 4 (mid-epoch) and 6, logs at 3
    and 6. Dropping checkpoint 6 is a kill just before it was saved: the resumed run redoes 5-6."""
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    args = lambda wd: train_args(bench, wd, prepared, "--config.num_epochs=1", "--config.log_every=3")
    finish(start(args(full), str(tmp_path / "full.log"), env))
    assert steps_in(os.path.join(full, "checkpoints")) == [4, 6]
    shutil.copytree(full, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", "6"))
    assert "resumed from step 4" in finish(start(args(cut), str(tmp_path / "cut.log"), env))
    assert numbers(cut) == numbers(full)


def test_sigint_mid_epoch_saves_exits_130_and_resumes_exactly(bench, prepared, env, tmp_path):
    """Ctrl-C after step 3 (checkpoints every 2 steps): the run saves at the step boundary it reached,
    prints one line and exits 130; the same command then ends exactly as an uninterrupted run."""
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    args = lambda wd: train_args(bench, wd, prepared, "--config.num_epochs=1", "--config.checkpoint_every_steps=0")
    finish(start(args(ref), str(tmp_path / "ref.log"), env))
    proc = start(args(cut), str(tmp_path / "cut.log"), env)
    deadline = time.time() + 300
    while not logged(cut, 2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=300)
    out = output(proc)
    assert rc == 130, out[-3000:]
    assert "Traceback" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    step = int(line.split("interrupted at step ")[1].split(";")[0])
    assert 2 <= step <= STEPS_PER_EPOCH and "run the same command to resume" in line
    assert steps_in(os.path.join(cut, "checkpoints")) == [step]  # saved at the boundary it reached
    assert f"resumed from step {step}" in finish(start(args(cut), str(tmp_path / "resumed.log"), env))
    assert numbers(cut) == numbers(ref)
    last = steps_in(os.path.join(ref, "checkpoints"))[-1]
    assert_trees_equal(restore_tree(os.path.join(ref, "checkpoints", str(last), "state")),
                       restore_tree(os.path.join(cut, "checkpoints", str(last), "state")))


def test_plateau_schedule_resumes_exactly(bench, prepared, env, tmp_path):
    """MulT's reduce-on-plateau schedule (patience 0; a 99 % relative threshold makes every epoch after
    the first a bad one, so epoch 2's dev score cuts the lr 10x): a run resumed from the mid-epoch
    checkpoint of epoch 3 continues at the cut lr and logs the same numbers and final state as the full run."""
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    args = lambda wd: train_args(bench, wd, prepared, "--config.optimizer.plateau.patience=0",
                                 "--config.optimizer.plateau.threshold=0.99", "--config.optimizer.plateau.mode=min",
                                 "--config.optimizer.plateau.metric=acc", config="mult.py:tiny")
    finish(start(args(full), str(tmp_path / "full.log"), env))
    lr_by_epoch = {r["epoch"]: r["lr"] for r in read_metrics(full) if "train_loss" in r}
    base = lr_by_epoch[1]
    assert [lr_by_epoch[e] / base for e in (1, 2, 3)] == pytest.approx([1.0, 1.0, 0.1])
    assert steps_in(os.path.join(full, "checkpoints")) == [FINAL - 2, FINAL]
    shutil.copytree(full, cut)
    shutil.rmtree(os.path.join(cut, "checkpoints", str(FINAL)))
    assert f"resumed from step {FINAL - 2}" in finish(start(args(cut), str(tmp_path / "cut.log"), env))
    assert numbers(cut) == numbers(full)
    assert_trees_equal(restore_tree(os.path.join(full, "checkpoints", str(FINAL), "state")),
                       restore_tree(os.path.join(cut, "checkpoints", str(FINAL), "state")))
