"""A synthetic intent benchmark written in the official MIntRec layout.

The twenty MIntRec intents form ten pairs. Both intents of a pair draw their utterances from the
same word pool, so text alone can tell the pair but not the intent (text-only accuracy ~50 %).
The intent inside the pair is carried by a cue: a fixed pattern added to a window of frames at a
random time in the audio and/or the video stream, over Gaussian noise, with variable lengths.
A model that fuses text with the non-verbal streams can reach ~100 %.

Files written (the MIntRec release layout, read back by `formats.mintrec`)::

    OUT/train.tsv dev.tsv test.tsv                  season episode clip text label
    OUT/video_data/video_feats.pkl                  key -> list of T arrays (1, D_video)
    OUT/audio_data/audio_feats.pkl                  key -> (T, D_audio) float32
    OUT/bert/config.json vocab.txt model.safetensors   a small randomly initialised BERT

CLI: ``python -m mmfuse_jax.data.synthetic --out=DIR [--train=800 --seed=0 ...]``.
In a ``config.dataset``: ``synthetic = {generator: "mintrec", train, dev, test, seed}``.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pickle

import numpy as np

from mmfuse_jax.data.formats import mintrec
from mmfuse_jax.data.synthetic.common import (
    SPECIAL_TOKENS,
    add_noise,
    incongruent_rows,
    spec_cli,
    write_meta,
    write_random_bert,
)

_WORDS = ("you", "we", "they", "really", "just", "so", "that", "this", "it", "is", "was", "the",
          "a", "my", "your", "our", "today", "now", "again", "here", "there", "well", "oh", "okay")
_TOPICS = (
    ("meeting", "late", "boss", "report", "office", "monday"),
    ("dinner", "kitchen", "pasta", "recipe", "oven", "salt"),
    ("car", "parking", "keys", "garage", "engine", "road"),
    ("phone", "message", "battery", "call", "screen", "charger"),
    ("shoes", "store", "price", "sale", "size", "color"),
    ("party", "music", "guests", "cake", "dance", "friday"),
    ("doctor", "headache", "pills", "appointment", "fever", "rest"),
    ("movie", "tickets", "seats", "popcorn", "actor", "ending"),
    ("garden", "flowers", "rain", "roses", "fence", "weeds"),
    ("project", "deadline", "team", "slides", "client", "budget"),
)
NAME = "mintrec"                    # config.dataset.synthetic.generator
COMPLETE = "train.tsv"              # its presence under the root: the benchmark is there
# What a preset stores in config.dataset.synthetic (the knobs: --config.dataset.synthetic.incongruity=0.3 ...).
CONFIG_FIELDS = ("train", "dev", "test", "seed", "incongruity", "audio_noise", "video_noise")


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and difficulty of the benchmark (defaults: `make demo` in a few minutes on 2 cores)."""

    train: int = 800
    dev: int = 200
    test: int = 200
    audio_dim: int = 24
    video_dim: int = 12
    audio_len: tuple[int, int] = (24, 64)   # min, max frames
    video_len: tuple[int, int] = (12, 32)
    cue_amplitude: float = 1.0              # pattern entries are +-amplitude over unit noise
    cue_fraction: tuple[float, float] = (0.25, 0.5)  # window length / sequence length
    bert_hidden: int = 64
    bert_layers: int = 2
    bert_heads: int = 4
    seed: int = 0
    # Knobs (ours, for the experiments; 0 = the benchmark as it always was, byte for byte):
    incongruity: float = 0.0    # fraction of each split whose audio/video cue shows ANOTHER member of the
    #                             text's pair than the label's (label and text unchanged); ids in synthetic.json
    audio_noise: float = 0.0    # std of extra Gaussian noise on every audio frame
    video_noise: float = 0.0    # the same for video


SPEC = SyntheticSpec


def utterance(rng: np.random.Generator, topic: int) -> str:
    n_topic, n_fill = rng.integers(2, 4), rng.integers(3, 7)
    words = list(rng.choice(_TOPICS[topic], n_topic, replace=False)) + list(rng.choice(_WORDS, n_fill))
    rng.shuffle(words)
    return " ".join(words)


def cued_frames(rng, lengths, dim, pattern, spec):
    """Noise [T, dim] with ``pattern`` added on a random window (no window if pattern is None)."""
    t = int(rng.integers(lengths[0], lengths[1] + 1))
    x = rng.standard_normal((t, dim)).astype(np.float32)
    if pattern is not None:
        w = max(1, round(t * rng.uniform(*spec.cue_fraction)))
        start = int(rng.integers(0, t - w + 1))
        x[start:start + w] += pattern
    return x


def generate(spec: SyntheticSpec = SyntheticSpec()):
    """In-memory examples ``{split: [dict(key, season, episode, clip, text, label, audio, video)]}``."""
    rng = np.random.default_rng(spec.seed)
    # One pattern per (modality, member of the pair), shared by all pairs.
    patterns = {m: rng.choice([-1.0, 1.0], (2, d)).astype(np.float32) * spec.cue_amplitude
                for m, d in (("audio", spec.audio_dim), ("video", spec.video_dim))}
    splits, clip = {}, 0
    for split, n in (("train", spec.train), ("dev", spec.dev), ("test", spec.test)):
        rows, flip = [], set(incongruent_rows(spec.seed, split, n, spec.incongruity))
        for i in range(n):
            label = int(rng.integers(len(mintrec.LABELS)))
            topic, member = label // 2, label % 2
            cue_member = 1 - member if i in flip else member  # incongruent: the other member's cue
            where = rng.choice(["audio", "video", "both"])  # which stream(s) carry the cue
            clip += 1
            season, episode = f"S{1 + clip % 5:02d}", f"E{1 + clip % 23:02d}"
            ex = {"season": season, "episode": episode, "clip": str(clip),
                  "key": f"{season}_{episode}_{clip}", "text": utterance(rng, topic), "label": label,
                  "incongruent": i in flip}
            for m, lens, dim in (("audio", spec.audio_len, spec.audio_dim),
                                 ("video", spec.video_len, spec.video_dim)):
                pat = patterns[m][cue_member] if where in (m, "both") else None
                ex[m] = cued_frames(rng, lens, dim, pat, spec)
            rows.append(ex)
        splits[split] = rows
        add_noise([ex["audio"] for ex in rows], spec.audio_noise, spec.seed, "audio", split)
        add_noise([ex["video"] for ex in rows], spec.video_noise, spec.seed, "video", split)
    return splits


def vocabulary() -> list[str]:
    words = sorted({w for topic in _TOPICS for w in topic} | set(_WORDS))
    return SPECIAL_TOKENS + words


def write(out: str, spec: SyntheticSpec = SyntheticSpec()) -> str:
    """Write the benchmark (and a random BERT) under ``out`` in the MIntRec layout; returns ``out``."""
    splits = generate(spec)
    os.makedirs(os.path.join(out, "video_data"), exist_ok=True)
    os.makedirs(os.path.join(out, "audio_data"), exist_ok=True)
    audio, video = {}, {}
    for split, rows in splits.items():
        with open(os.path.join(out, f"{split}.tsv"), "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(mintrec.HEADER)
            for ex in rows:
                w.writerow([ex["season"], ex["episode"], ex["clip"], ex["text"], mintrec.LABELS[ex["label"]]])
                audio[ex["key"]] = ex["audio"]
                video[ex["key"]] = [frame[None, :] for frame in ex["video"]]  # list of (1, D) as released
    with open(os.path.join(out, mintrec.AUDIO_PKL), "wb") as f:
        pickle.dump(audio, f, protocol=4)
    with open(os.path.join(out, mintrec.VIDEO_PKL), "wb") as f:
        pickle.dump(video, f, protocol=4)
    write_random_bert(os.path.join(out, "bert"), vocabulary(), hidden=spec.bert_hidden, layers=spec.bert_layers,
                      heads=spec.bert_heads, seed=spec.seed)
    write_meta(out, NAME, spec, {s: [ex["key"] for ex in rows if ex["incongruent"]] for s, rows in splits.items()})
    return out


def main(argv: list[str] | None = None) -> None:
    spec_cli(argv, __doc__, SyntheticSpec, write, "synthetic MIntRec-layout benchmark")


if __name__ == "__main__":
    main()
