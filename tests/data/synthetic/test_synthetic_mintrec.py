"""The synthetic benchmark: official layout, determinism, and labels that need the non-verbal cue."""
from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import numpy as np
from conftest import REPO

from mmfuse_jax.data import synthetic
from mmfuse_jax.data.formats import mintrec

SMALL = synthetic.SyntheticSpec(train=40, dev=12, test=12, bert_hidden=12, bert_heads=2, bert_layers=1)


def test_written_in_mintrec_layout_and_readable(tmp_path):
    root = synthetic.write(str(tmp_path / "s"), SMALL)
    for name in ("train.tsv", "dev.tsv", "test.tsv", "video_data/video_feats.pkl", "audio_data/audio_feats.pkl",
                 "bert/config.json", "bert/vocab.txt", "bert/model.safetensors"):
        assert os.path.exists(os.path.join(root, name)), name
    with open(os.path.join(root, "train.tsv")) as f:
        assert f.readline().split("\t")[:5] == ["season", "episode", "clip", "text", "label\n"][:4] + ["label\n"]
    splits, _ = mintrec.read(root, feat_dims={"audio": SMALL.audio_dim, "video": SMALL.video_dim},
                             max_lens={"text": 30, "audio": 999, "video": 999})
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [40, 12, 12]
    key = splits["train"][0]["key"]
    assert key.count("_") == 2 and key.startswith("S") and "_E" in key


def test_deterministic_by_seed(tmp_path):
    a = synthetic.write(str(tmp_path / "a"), SMALL)
    b = synthetic.write(str(tmp_path / "b"), SMALL)
    for name in ("train.tsv", "test.tsv", "audio_data/audio_feats.pkl", "video_data/video_feats.pkl",
                 "bert/model.safetensors"):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    other = synthetic.generate(synthetic.SyntheticSpec(train=40, dev=12, test=12, seed=1))
    assert [e["text"] for e in other["train"]] != [e["text"] for e in synthetic.generate(SMALL)["train"]]


def test_text_tells_the_pair_but_not_the_intent():
    data = synthetic.generate(synthetic.SyntheticSpec(train=600, dev=1, test=1))["train"]
    vocab_by_label = {}
    for ex in data:
        vocab_by_label.setdefault(ex["label"], set()).update(ex["text"].split())
    for pair in range(10):
        fillers = set(synthetic.mintrec._WORDS)
        a, b = vocab_by_label[2 * pair] - fillers, vocab_by_label[2 * pair + 1] - fillers
        assert a == b == set(synthetic.mintrec._TOPICS[pair])  # both intents of a pair use the same topic words
        assert not a & (vocab_by_label[(2 * pair + 2) % 20] - fillers)  # other pairs use other words


def test_cue_separates_the_pair_members():
    spec = synthetic.SyntheticSpec(train=400, dev=1, test=1)
    data = synthetic.generate(spec)["train"]
    # The max over frames of the projection on the difference of the two audio patterns
    # separates the members whenever the cue is in the audio stream.
    rng = np.random.default_rng(spec.seed)
    patterns = rng.choice([-1.0, 1.0], (2, spec.audio_dim))
    direction = patterns[0] - patterns[1]
    scores = {0: [], 1: []}
    for ex in data:
        proj = ex["audio"] @ direction
        scores[ex["label"] % 2].append(proj.max())
    assert np.mean(scores[0]) > np.mean(scores[1])


def test_cli(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "mmfuse_jax.data.synthetic", f"--out={out}", "--train=20",
                        "--dev=5", "--test=5", "--bert_hidden=12", "--bert_heads=2"], check=False,
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(out / "dev.tsv") as f:
        assert len(f.readlines()) == 6
