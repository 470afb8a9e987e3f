"""The synthetic MIntRec2.0-layout benchmark: written in the release layout, deterministic, read back
by the MIntRec2.0 reader; OOS rows carry an unseen cue on known topics."""
from __future__ import annotations

import filecmp
import os

import numpy as np

from configs import datasets
from mmfuse_jax.data import ensure_dataset
from mmfuse_jax.data.formats import mintrec2
from mmfuse_jax.data.synthetic import mintrec as mintrec_synth
from mmfuse_jax.data.synthetic import mintrec2 as syn

HEADER = list(mintrec2.HEADER)
OOS_DIR = mintrec2.OUT_OF_SCOPE

SMALL = syn.Mintrec2Spec(train=60, dev=15, test=15, oos_train=12, oos_dev=6, oos_test=9,
                         bert_hidden=12, bert_heads=2, bert_layers=1)


def test_synthetic_written_in_layout_readable_and_deterministic(tmp_path):
    ds = datasets.dataset("synthetic_mintrec2_tiny")
    ds.root = a = str(tmp_path / "a")
    ds.synthetic.update(train=60, dev=15, test=15, oos_train=12, oos_dev=6, oos_test=9)
    ds.synthetic.bert_hidden, ds.synthetic.bert_heads, ds.synthetic.bert_layers = 12, 2, 1
    ensure_dataset(ds)
    stamp = os.path.getmtime(os.path.join(a, "in-scope", "train.tsv"))
    ensure_dataset(ds)  # already there: not written again
    assert os.path.getmtime(os.path.join(a, "in-scope", "train.tsv")) == stamp
    syn.main([f"--out={tmp_path / 'b'}", "--train=60", "--dev=15", "--test=15", "--oos_train=12",
              "--oos_dev=6", "--oos_test=9", "--bert_hidden=12", "--bert_heads=2", "--bert_layers=1"])
    b = str(tmp_path / "b")
    for name in ("in-scope/train.tsv", "in-scope/test.tsv", f"{OOS_DIR}/test.tsv",
                 f"in-scope/{mintrec2.AUDIO_PKL}", f"{OOS_DIR}/{mintrec2.VIDEO_PKL}", "bert/model.safetensors"):
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    with open(os.path.join(a, "in-scope", "train.tsv")) as f:
        assert f.readline().rstrip("\n").split("\t") == HEADER
    dims = {"audio": SMALL.audio_dim, "video": SMALL.video_dim}
    splits, _ = mintrec2.read(a, feat_dims=dims, max_lens={"text": 16, "audio": 999, "video": 999},
                              oos_splits=("train", "dev", "test"))
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [72, 21, 24]
    for s, n_oos in (("train", 12), ("dev", 6), ("test", 9)):
        labels = np.array([e["label"] for e in splits[s]])
        assert (labels == 30).sum() == n_oos and labels[-n_oos:].tolist() == [30] * n_oos
    # Interleaved dialogues: in-scope files have gaps in their utterance ids.
    utts = {}
    for e in splits["train"][:60]:
        dia, utt = e["key"][3:].split("_utt")
        utts.setdefault(dia, []).append(int(utt))
    assert any(u != list(range(len(u))) for u in utts.values())


def test_synthetic_oos_is_an_unseen_cue_on_known_topics():
    data = syn.generate(syn.Mintrec2Spec(train=900, dev=1, test=1, oos_train=300, oos_dev=1, oos_test=1))
    rows = data["train"]
    known = [e for e in rows if e["label"] < 30]
    assert {e["label"] for e in known} == set(range(30))
    for e in rows:  # every utterance, OOS included, speaks about exactly one known topic
        topics = [i for i, t in enumerate(mintrec_synth._TOPICS) if set(t) & set(e["text"].split())]
        assert len(topics) == 1 and (e["label"] == 30 or e["label"] // 3 == topics[0])
    # The cue patterns: 3 known + 2 OOS per modality, as generate draws them first.
    rng = np.random.default_rng(0)
    pat = rng.choice([-1.0, 1.0], (5, syn.Mintrec2Spec().audio_dim))

    def best_pattern(x):
        return int(np.argmax((x @ pat.T).max(0)))

    acc_known = np.mean([best_pattern(e["audio"]) == e["label"] % 3 for e in known])
    oos = [e for e in rows if e["label"] == 30]
    frac_unseen = np.mean([best_pattern(e["audio"]) >= 3 for e in oos])
    assert acc_known > 0.6 and frac_unseen > 0.6  # the cue is in the audio for ~2/3 of the rows
