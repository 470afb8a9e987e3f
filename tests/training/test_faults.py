"""Training faults through the real CLI: non-finite losses, corrupt checkpoints, unwritable workdirs."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, synthetic_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from mmfuse_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("faults") / "bench")
    return synthetic_copy(root, "mintrec", synthetic.SyntheticSpec(train=64, dev=32, test=32, bert_hidden=24,
                                                                   bert_heads=2))


def train(bench, workdir, *extra, root=None):
    root = root or bench
    return subprocess.run(
        [sys.executable, "train.py", f"--config={REPO}/configs/early_fusion.py:tiny", f"--workdir={workdir}",
         f"--config.dataset.root={root}", f"--config.dataset.bert_path={bench}/bert", "--config.log_every=1",
         *extra], cwd=REPO, capture_output=True, text=True, timeout=600)


def steps(workdir, sub="checkpoints"):
    d = os.path.join(workdir, sub)
    return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def poisoned_copy(bench, dst, value=3e38):
    """A copy of the release whose first training example has huge (finite) audio: the loss overflows."""
    shutil.copytree(bench, dst)
    path = os.path.join(dst, "audio_data", "audio_feats.pkl")
    with open(path, "rb") as f:
        feats = pickle.load(f)
    with open(os.path.join(dst, "train.tsv")) as f:
        first = f.readlines()[1].split("\t")
    feats["_".join(first[:3])] = np.full_like(feats["_".join(first[:3])], value)
    with open(path, "wb") as f:
        pickle.dump(feats, f)
    shutil.rmtree(os.path.join(dst, "prepared"), ignore_errors=True)
    return dst


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(bench, tmp_path):
    # The run's own data folder is poisoned in place (the same config: the run's identity allows it),
    # then restored.
    workdir, root, clean = str(tmp_path / "run"), str(tmp_path / "data"), str(tmp_path / "clean")
    shutil.copytree(bench, root)
    r = train(bench, workdir, "--config.num_epochs=1", root=root)
    assert r.returncode == 0, r.stderr[-2000:]
    good = steps(workdir)
    assert good == [2]
    shutil.copytree(root, clean)
    shutil.rmtree(root)
    poisoned_copy(clean, root)
    r = train(bench, workdir, "--config.num_epochs=3", root=root)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "non-finite loss or gradient" in r.stderr and "Traceback" not in r.stderr
    assert steps(workdir) == good  # nothing saved over the good checkpoint
    shutil.rmtree(root)
    shutil.copytree(clean, root)
    r = train(bench, workdir, "--config.num_epochs=2", root=root)  # the clean data resumes from it
    assert r.returncode == 0 and "resumed from step 2" in r.stdout, r.stderr[-2000:]


def test_nonfinite_steps_can_be_skipped(bench, tmp_path):
    bad_root = poisoned_copy(bench, str(tmp_path / "poisoned"))
    r = train(bench, str(tmp_path / "run"), "--config.num_epochs=1", "--config.nonfinite_policy=skip", root=bad_root)
    assert r.returncode == 0, r.stderr[-2000:]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(bench, tmp_path):
    workdir = str(tmp_path / "run")
    r = train(bench, workdir, "--config.num_epochs=2")
    assert r.returncode == 0 and steps(workdir) == [2, 4], r.stderr[-2000:]
    for dirpath, _, files in os.walk(os.path.join(workdir, "checkpoints", "4")):
        for name in files:  # truncate every file of the newest step
            with open(os.path.join(dirpath, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(os.path.join(dirpath, name)) // 3))
    r = train(bench, workdir, "--config.num_epochs=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checkpoint step 4" in r.stdout + r.stderr and "resumed from step 2" in r.stdout


def test_workdir_that_is_a_file_fails_before_training(bench, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    for workdir in (path, path / "sub"):  # an existing file, and a folder that cannot be created
        r = train(bench, str(workdir), "--config.num_epochs=1")
        assert r.returncode == 2 and "is not writable" in r.stderr and "Traceback" not in r.stderr
