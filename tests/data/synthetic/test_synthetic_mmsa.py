"""The synthetic MMSA-layout benchmark: written in the release layout, read back by the MMSA reader."""
from __future__ import annotations

import numpy as np

from mmfuse_jax.data.formats import mmsa
from mmfuse_jax.data.synthetic import mmsa as synthetic_mmsa
from mmfuse_jax.encoders.bert import BertConfig

SPEC = synthetic_mmsa.SyntheticMMSASpec(train=40, dev=12, test=12, text_len=12, audio_len=(6, 16), video_len=(4, 10),
                                        audio_dim=6, video_dim=5, bert_hidden=16)


def test_one_modality_carries_the_label_exactly():
    data = synthetic_mmsa.generate(SPEC)
    for split in data.values():
        uni = np.stack([split[f"regression_labels_{m}"] for m in "TAV"], axis=1)
        np.testing.assert_array_equal(uni[np.arange(len(uni)), split["dominant"]], split["regression_labels"])
        assert (np.abs(uni[..., None] - synthetic_mmsa.GRID).min(-1) < 1e-6).all()  # the SIMS grid
    assert len(set(data["train"]["dominant"].tolist())) == 3


def test_written_release_reads_back(tmp_path):
    root = synthetic_mmsa.write(str(tmp_path / "bench"), SPEC)
    dims, lens = {"audio": 6, "video": 5}, {"text": 12, "audio": 16, "video": 10}
    splits, _ = mmsa.read(root, feat_dims=dims, max_lens=lens, nonfinite="zero")
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "dev": 12, "test": 12}
    ex = splits["train"][0]
    assert ex["text_ids"][0] == synthetic_mmsa.vocabulary().index("[CLS]") and ex["audio"].shape[1] == 6
    assert {"label_text", "label_audio", "label_video"} <= set(ex)
    cfg = BertConfig.from_json(str(tmp_path / "bench" / "bert" / "config.json"))
    assert (cfg.hidden_size, cfg.vocab_size) == (16, len(synthetic_mmsa.vocabulary()))
