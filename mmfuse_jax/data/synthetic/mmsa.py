"""A synthetic sentiment-regression benchmark written in the MMSA pickle layout (CH-SIMS style).

Each utterance has a sentiment y on the SIMS grid {-1.0, -0.8, ..., 1.0} and one *dominant*
modality, chosen at random. The dominant modality carries y exactly and loudly; the two others
carry a noisy copy y_m = clip(round(y + N(0, noise))) more quietly. The unimodal labels are the
y_m (``regression_labels_T/A/V``, as SIMS releases them), the multimodal label is y. So a model
has to work out per sample which modality to trust: the case KuDA's dynamic fusion is built for.

  text : [CLS] fillers + the sentiment word of y_T (three times if text dominates, else once) [SEP]
  audio: N(0, 1) frames + amp * y_A * pattern on a random window; amp 2 dominant / 0.7 otherwise
  video: the same with its own pattern; about 2 % of the audio values are -inf, as in real MOSI

Files (read back by `formats.mmsa`)::

    OUT/Processed/unaligned.pkl     {'train'|'valid'|'test': {id, raw_text, text, text_bert, audio,
                                     vision, audio_lengths, vision_lengths, regression_labels(_T/_A/_V)}}
    OUT/bert/                       a small randomly initialised BERT (config, vocab, safetensors), or
                                    RoBERTa (``text_encoder='roberta'``: vocab.json + merges.txt)

In a ``config.dataset``: ``synthetic = {generator: "mmsa", <every SyntheticMMSASpec field>}``.
"""
from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np

from mmfuse_jax.data.synthetic.common import SPECIAL_TOKENS, add_noise, incongruent_rows, write_meta, write_random_bert
from mmfuse_jax.errors import ConfigError

GRID = np.round(np.arange(-1.0, 1.01, 0.2), 1)   # 11 sentiment values
SENTIMENT_WORDS = ("awful", "terrible", "bad", "poor", "meh", "okay", "fine", "good", "great", "superb",
                   "perfect")
FILLERS = ("the", "a", "this", "that", "is", "was", "it", "movie", "food", "day", "so", "really", "very",
           "i", "think", "we", "today", "here")
PICKLE = os.path.join("Processed", "unaligned.pkl")
NAME = "mmsa"                       # config.dataset.synthetic.generator
COMPLETE = PICKLE                   # `write` saves the pickle last


@dataclasses.dataclass(frozen=True)
class SyntheticMMSASpec:
    train: int = 800
    dev: int = 200
    test: int = 200
    text_len: int = 16                  # padded token length (MMSA text_bert [N, 3, L])
    audio_len: tuple[int, int] = (16, 40)
    video_len: tuple[int, int] = (8, 20)
    audio_dim: int = 12
    video_dim: int = 10
    text_feat_dim: int = 8              # the 'text' feature array (feature path; unused by KuDA)
    noise: float = 0.5                  # std of the non-dominant modalities' sentiment noise
    bert_hidden: int = 32
    bert_layers: int = 2
    bert_heads: int = 2
    bert_intermediate: int = 0          # 0: 4 * hidden
    bert_dropout: float = 0.1
    seed: int = 0
    # The random text encoder written under bert/ (the dataset's bert_path), ours: 'bert' (WordPiece
    # vocab.txt = `vocabulary()`) or 'roberta' (byte-level BPE learnt on the same words, one token each;
    # the same sizes; read the data with read_options.tokenize_raw_text=True). The pickle is the same.
    text_encoder: str = "bert"
    # Knobs (ours, for the experiments; 0 = the benchmark as it always was, byte for byte):
    incongruity: float = 0.0    # fraction of each split whose audio AND video carry the opposite of the text's
    #                             sentiment (-y_T; their unimodal labels say so, the label y is unchanged)
    audio_noise: float = 0.0    # std of extra Gaussian noise on every real audio frame
    video_noise: float = 0.0    # the same for video


SPEC = SyntheticMMSASpec
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(SyntheticMMSASpec))  # a preset stores them all


def vocabulary() -> list[str]:
    return SPECIAL_TOKENS + list(SENTIMENT_WORDS) + list(FILLERS)


def _grid_index(y: np.ndarray) -> np.ndarray:
    return np.rint((np.clip(y, -1, 1) + 1.0) / 0.2).astype(np.int64)


def _frames(rng, lengths, dim, pad_to, pattern, value, amp):
    t = int(rng.integers(lengths[0], lengths[1] + 1))
    x = np.zeros((pad_to, dim), np.float32)
    x[:t] = rng.standard_normal((t, dim))
    w = max(1, t // 2)
    start = int(rng.integers(0, t - w + 1))
    x[start:start + w] += amp * value * pattern
    return x, t


def _split(rng, n: int, spec: SyntheticMMSASpec, patterns: dict, vocab: list[str], name: str) -> dict:
    tok = {w: i for i, w in enumerate(vocab)}
    y = GRID[rng.integers(0, len(GRID), n)]
    dominant = rng.integers(0, 3, n)  # 0 text, 1 audio, 2 video
    uni = np.stack([GRID[_grid_index(y + rng.normal(0, spec.noise, n))] for _ in range(3)], axis=1)
    uni[np.arange(n), dominant] = y
    flip = incongruent_rows(spec.seed, name, n, spec.incongruity)
    uni[flip, 1] = uni[flip, 2] = -uni[flip, 0]  # incongruent: audio and video contradict the text
    text_bert = np.zeros((n, 3, spec.text_len), np.float32)
    text = np.zeros((n, spec.text_len, spec.text_feat_dim), np.float32)
    audio = np.zeros((n, spec.audio_len[1], spec.audio_dim), np.float32)
    vision = np.zeros((n, spec.video_len[1], spec.video_dim), np.float32)
    a_len, v_len, raw = np.zeros(n, np.int64), np.zeros(n, np.int64), []
    for i in range(n):
        word = SENTIMENT_WORDS[_grid_index(uni[i, 0])]
        words = list(rng.choice(FILLERS, int(rng.integers(2, spec.text_len - 6))))
        for _ in range(3 if dominant[i] == 0 else 1):
            words.insert(int(rng.integers(0, len(words) + 1)), word)
        words = words[: spec.text_len - 2]
        ids = [tok["[CLS]"], *(tok[w] for w in words), tok["[SEP]"]]
        text_bert[i, 0, : len(ids)], text_bert[i, 1, : len(ids)] = ids, 1
        text[i, : len(ids)] = rng.standard_normal((len(ids), spec.text_feat_dim)) + uni[i, 0]
        raw.append(" ".join(words))
        audio[i], a_len[i] = _frames(rng, spec.audio_len, spec.audio_dim, spec.audio_len[1], patterns["audio"],
                                     uni[i, 1], 2.0 if dominant[i] == 1 else 0.7)
        vision[i], v_len[i] = _frames(rng, spec.video_len, spec.video_dim, spec.video_len[1], patterns["video"],
                                      uni[i, 2], 2.0 if dominant[i] == 2 else 0.7)
        if rng.random() < 0.02:  # MOSI-style -inf in a real frame
            audio[i, int(rng.integers(0, a_len[i])), int(rng.integers(0, spec.audio_dim))] = -np.inf
    add_noise(audio, spec.audio_noise, spec.seed, "audio", name, a_len)
    add_noise(vision, spec.video_noise, spec.seed, "video", name, v_len)
    return {"id": [f"{name}{i:05d}$_$0" for i in range(n)], "raw_text": raw, "text": text,
            "text_bert": text_bert, "audio": audio, "vision": vision, "audio_lengths": a_len,
            "vision_lengths": v_len, "regression_labels": y.astype(np.float32),
            "regression_labels_T": uni[:, 0].astype(np.float32), "regression_labels_A": uni[:, 1].astype(np.float32),
            "regression_labels_V": uni[:, 2].astype(np.float32), "dominant": dominant}


def generate(spec: SyntheticMMSASpec = SyntheticMMSASpec()) -> dict:
    """``{'train'|'valid'|'test': split dict}`` in the MMSA layout (plus our 'dominant' index)."""
    rng = np.random.default_rng(spec.seed)
    patterns = {"audio": rng.choice([-1.0, 1.0], spec.audio_dim).astype(np.float32),
                "video": rng.choice([-1.0, 1.0], spec.video_dim).astype(np.float32)}
    vocab = vocabulary()
    return {name: _split(rng, n, spec, patterns, vocab, name)
            for name, n in (("train", spec.train), ("valid", spec.dev), ("test", spec.test))}


TEXT_ENCODERS = ("bert", "roberta")


def write_text_encoder(out: str, spec: SyntheticMMSASpec) -> None:
    """The random BERT, or RoBERTa (``spec.text_encoder``), of the spec's sizes under ``out``. The
    RoBERTa's BPE is learnt on the vocabulary's words (each at the start and after a space, twice), so
    every word is one token, as with the BERT, and every seed gets the same tokenizer."""
    sizes = {"hidden": spec.bert_hidden, "layers": spec.bert_layers, "heads": spec.bert_heads, "seed": spec.seed,
             "intermediate": spec.bert_intermediate, "max_positions": max(64, spec.text_len),
             "dropout": spec.bert_dropout}
    if spec.text_encoder == "roberta":
        from mmfuse_jax.encoders.roberta import write_random_roberta

        words = vocabulary()[len(SPECIAL_TOKENS):]
        write_random_roberta(out, [f"{w} {w}" for w in words] * 2, vocab_size=1000, **sizes)
    else:
        write_random_bert(out, vocabulary(), **sizes)


def write(out: str, spec: SyntheticMMSASpec = SyntheticMMSASpec()) -> str:
    """Write the pickle and a random BERT (or RoBERTa: ``spec.text_encoder``) under ``out``; returns ``out``."""
    if spec.text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"config.dataset.synthetic.text_encoder={spec.text_encoder!r}: expected one of "
                          f"{list(TEXT_ENCODERS)}")
    data = generate(spec)
    os.makedirs(os.path.join(out, "Processed"), exist_ok=True)
    tmp = os.path.join(out, PICKLE + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=4)
    write_text_encoder(os.path.join(out, "bert"), spec)
    write_meta(out, NAME, spec, {split: [d["id"][i] for i in incongruent_rows(spec.seed, split, len(d["id"]),
                                                                               spec.incongruity)]
                                 for split, d in data.items()})
    os.replace(tmp, os.path.join(out, PICKLE))  # the pickle last: its presence means "complete"
    return out
