"""Shared fixtures. JAX sees 4 CPU devices in every test, so the sharded code path is the one tested."""
from __future__ import annotations

import csv
import os
import pickle
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)  # before any backend starts

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def write_mintrec(root, rows, *, audio_dim=6, video_dim=5, extra_keys=0, seed=0, audio=None, video=None):
    """Write a MIntRec release under ``root``: rows are (split, season, episode, clip, text, label[, T_a, T_v]).

    Features are random unless ``audio``/``video`` dicts (key -> array) override entries.
    Video is stored as the release does: a list of (1, D) arrays per key.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "audio_data"), exist_ok=True)
    os.makedirs(os.path.join(root, "video_data"), exist_ok=True)
    by_split = {"train": [], "dev": [], "test": []}
    a, v = {}, {}
    for row in rows:
        split, season, episode, clip, text, label, *lens = row
        t_a, t_v = lens if lens else (7, 4)
        by_split[split].append((season, episode, clip, text, label))
        key = f"{season}_{episode}_{clip}"
        a[key] = rng.standard_normal((t_a, audio_dim)).astype(np.float32)
        v[key] = [rng.standard_normal((1, video_dim)).astype(np.float32) for _ in range(t_v)]
    for i in range(extra_keys):  # keys no TSV row uses, as in the real pickles
        a[f"S99_E99_{i}"] = rng.standard_normal((3, audio_dim)).astype(np.float32)
        v[f"S99_E99_{i}"] = [rng.standard_normal((1, video_dim)).astype(np.float32)]
    a.update(audio or {})
    v.update(video or {})
    for split, split_rows in by_split.items():
        with open(os.path.join(root, f"{split}.tsv"), "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["season", "episode", "clip", "text", "label"])
            w.writerows(split_rows)
    with open(os.path.join(root, "audio_data", "audio_feats.pkl"), "wb") as f:
        pickle.dump(a, f)
    with open(os.path.join(root, "video_data", "video_feats.pkl"), "wb") as f:
        pickle.dump(v, f)
    return root


SMALL_ROWS = [
    ("train", "S05", "E16", "329", "i am so sorry", "Apologise", 9, 6),
    ("train", "S01", "E02", "7", "can you help me with this", "Ask for help", 5, 3),
    ("train", "S02", "E03", "11", "thanks a lot", "Thank", 12, 8),
    ("dev", "S03", "E01", "4", "that was great", "Praise", 4, 2),
    ("test", "S04", "E09", "120", "see you later", "Leave", 6, 5),
]


@pytest.fixture
def mintrec_root(tmp_path):
    return write_mintrec(str(tmp_path / "MIntRec"), SMALL_ROWS, extra_keys=3)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic benchmark (MIntRec layout + random BERT), shared by the session."""
    from mmfuse_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("synthetic") / "bench")
    synthetic.write(root, synthetic.SyntheticSpec(train=96, dev=40, test=40, bert_hidden=24, bert_heads=2))
    return root


def tiny_config(model: str, root: str, **overrides):
    """The `tiny` preset of ``configs/<model>.py`` pointed at ``root``."""
    import importlib.util

    from ml_collections import config_flags  # noqa: F401  (ensures ml_collections is importable)

    spec = importlib.util.spec_from_file_location(f"cfg_{model}", os.path.join(REPO, "configs", f"{model}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    c.dataset.root = root
    c.dataset.bert_path = os.path.join(root, "bert")
    c.dataset.synthetic = {}
    c.dataset.prepared_dir = ""
    return set_fields(c, **overrides)


def set_fields(config, **overrides):
    """``config`` with ``{'a.b': value}`` overrides applied in place (and returned)."""
    for k, v in overrides.items():
        target = config
        *path, leaf = k.split(".")
        for p in path:
            target = target[p]
        target[leaf] = v
    return config
