"""The format registry: a reader registered from one test-local config file trains end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import REPO

from mmfuse_jax.data import synthetic
from mmfuse_jax.data.formats import FORMATS, get_format, mintrec, register_format
from mmfuse_jax.errors import ConfigError

TOY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_format_config.py")
WORDS = ("red", "green", "blue", "cat", "dog")


def write_toy(root: str, seed: int = 0) -> None:
    """A toy release (6 / 3 / 3 utterances) and a one-layer random BERT over its words."""
    rng = np.random.default_rng(seed)
    os.makedirs(root)
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
            for i in range(n):
                row = {"id": f"{split}{i}", "words": " ".join(rng.choice(WORDS, 3)), "label": ["no", "yes"][i % 2],
                       "audio": rng.standard_normal((int(rng.integers(2, 9)), 3)).tolist(),
                       "video": rng.standard_normal((int(rng.integers(2, 7)), 2)).tolist()}
                f.write(json.dumps(row) + "\n")
    synthetic.write_random_bert(os.path.join(root, "bert"), [*synthetic.SPECIAL_TOKENS, *WORDS], hidden=8,
                                layers=1, heads=2, seed=seed)


def test_register_and_look_up():
    assert get_format("mintrec") is mintrec is FORMATS["mintrec"]
    with pytest.raises(ConfigError, match=r"format='nope': expected one of \['mintrec', 'mintrec2'"):
        get_format("nope")
    with pytest.raises(ConfigError, match="needs a read"):
        register_format("bad", types.SimpleNamespace(LABELS=()))
    with pytest.raises(ConfigError, match="already registered"):
        register_format("mintrec", types.SimpleNamespace(read=lambda root, **kw: None, LABELS=()))
    register_format("mintrec", mintrec)  # the same reader again: fine
    assert FORMATS["mintrec"] is mintrec


@pytest.mark.slow
def test_a_toy_format_from_one_config_file_trains_early_fusion(tmp_path):
    root, workdir = str(tmp_path / "toy"), str(tmp_path / "run")
    write_toy(root)
    r = subprocess.run([sys.executable, "train.py", f"--config={TOY_CONFIG}:toy", f"--workdir={workdir}",
                        f"--config.dataset.root={root}", f"--config.dataset.bert_path={root}/bert",
                        "--config.dataset.num_buckets=1"],  # one shape: one compile per step function
                       cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert (saved["model_name"], saved["dataset"]["format"], saved["dataset"]["root"]) == ("early_fusion", "toy", root)
    with open(os.path.join(root, "prepared", "meta.json")) as f:
        assert json.load(f)["sizes"] == {"train": 6, "dev": 3, "test": 3}  # read by the toy reader
    assert os.path.isdir(os.path.join(workdir, "checkpoints"))
