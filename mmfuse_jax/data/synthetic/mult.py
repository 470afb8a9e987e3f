"""A synthetic IEMOCAP in the MulT pickle layout (yaohungt/Multimodal-Transformer), read by formats/mult.py.

    OUT/iemocap_data_noalign.pkl    {'train'|'valid'|'test': {'text' [N, Lt, Dt] word vectors (GloVe's
                                    place), 'audio' [N, La, Da], 'vision' [N, Lv, Dv], 'labels' [N, 4, 2]
                                    one-hot (no, yes) per emotion Neutral/Happy/Sad/Angry, 'id' [N, 3]}}
    OUT/bert/                       a small random BERT: the encoder sizes for BERT models that read the
                                    word vectors instead of tokens (DyKen-Hyena text_input='features')

Each example has one emotion e (the release's four binary labels with exactly one 'yes'). Every
modality is Gaussian noise plus a per-emotion pattern over a random half of its steps, at amplitude
``text_signal`` / ``audio_signal`` / ``video_signal`` (text strongest, as on IEMOCAP). Sequences are
stored padded to full length as the release stores them (the reader keeps every step).
"""
from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np

from mmfuse_jax.data.synthetic.common import SPECIAL_TOKENS, write_random_bert

NAME = "mult_iemocap"                # config.dataset.synthetic.generator
PICKLE = "iemocap_data_noalign.pkl"  # formats/mult.py pickle_path(root, 'iemocap', aligned=False)
COMPLETE = PICKLE                    # `write` saves the pickle last
EMOTIONS = 4


@dataclasses.dataclass(frozen=True)
class SyntheticMulTSpec:
    train: int = 400
    dev: int = 100
    test: int = 100
    text_len: int = 20                  # MulT IEMOCAP: 20 words, 400 audio, 500 video steps
    audio_len: int = 40
    video_len: int = 40
    text_dim: int = 300                 # GloVe
    audio_dim: int = 74                 # COVAREP
    video_dim: int = 35                 # Facet
    text_signal: float = 1.0
    audio_signal: float = 0.6
    video_signal: float = 0.6
    bert_hidden: int = 32
    bert_layers: int = 2
    bert_heads: int = 2
    bert_dropout: float = 0.1
    seed: int = 0


SPEC = SyntheticMulTSpec
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(SyntheticMulTSpec))


def _modality(rng, emotion: np.ndarray, patterns: np.ndarray, length: int, amp: float) -> np.ndarray:
    n, dim = len(emotion), patterns.shape[1]
    x = rng.standard_normal((n, length, dim)).astype(np.float32)
    w = max(1, length // 2)
    for i, e in enumerate(emotion):
        start = int(rng.integers(0, length - w + 1))
        x[i, start:start + w] += amp * patterns[e]
    return x


def _split(rng, n: int, spec: SyntheticMulTSpec, patterns: dict, name: str) -> dict:
    emotion = rng.integers(0, EMOTIONS, n)
    labels = np.zeros((n, EMOTIONS, 2), np.float32)
    labels[:, :, 0] = 1.0
    labels[np.arange(n), emotion] = (0.0, 1.0)
    return {"text": _modality(rng, emotion, patterns["text"], spec.text_len, spec.text_signal),
            "audio": _modality(rng, emotion, patterns["audio"], spec.audio_len, spec.audio_signal),
            "vision": _modality(rng, emotion, patterns["video"], spec.video_len, spec.video_signal),
            "labels": labels, "id": [[f"{name}{i:05d}", "0", "1"] for i in range(n)]}


def generate(spec: SyntheticMulTSpec = SyntheticMulTSpec()) -> dict:
    """``{'train'|'valid'|'test': split dict}`` in the MulT IEMOCAP layout."""
    rng = np.random.default_rng(spec.seed)
    patterns = {m: rng.choice([-1.0, 1.0], (EMOTIONS, d)).astype(np.float32)
                for m, d in (("text", spec.text_dim), ("audio", spec.audio_dim), ("video", spec.video_dim))}
    return {name: _split(rng, n, spec, patterns, name)
            for name, n in (("train", spec.train), ("valid", spec.dev), ("test", spec.test))}


def write(out: str, spec: SyntheticMulTSpec = SyntheticMulTSpec()) -> str:
    """Write the pickle and a random BERT under ``out``; returns ``out``."""
    data = generate(spec)
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, PICKLE + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=4)
    write_random_bert(os.path.join(out, "bert"), SPECIAL_TOKENS, hidden=spec.bert_hidden, layers=spec.bert_layers,
                      heads=spec.bert_heads, seed=spec.seed, max_positions=max(64, spec.text_len),
                      dropout=spec.bert_dropout)
    os.replace(tmp, os.path.join(out, PICKLE))  # the pickle last: its presence means "complete"
    return out
