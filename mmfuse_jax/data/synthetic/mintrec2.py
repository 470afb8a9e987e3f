"""A synthetic open-intent benchmark written in the MIntRec2.0 single-turn layout, with OOS data.

The thirty MIntRec2.0 intents form ten triples. The intents of a triple draw their words from the
same topic pool (the generators of `data/synthetic/mintrec.py`), so text tells the triple but not the
intent (text-only accuracy ~1/3); the intent inside the triple is carried by one of three cue
patterns added to a window of the audio and/or video frames. Out-of-scope utterances (label
``UNK``) talk about a known topic but carry one of ``oos_patterns`` further cue patterns that no
known intent uses: intents never seen among the training classes, visible only in the non-verbal
streams, so text alone cannot reject them while a fusion model can.

Utterances are grouped into dialogues; in-scope and OOS utterances of a dialogue are interleaved,
so utterance ids in each file have gaps, as in the release.

Files written (the MIntRec2.0 layout, read back by `formats.mintrec2`)::

    OUT/in-scope/{train,dev,test}.tsv                    Dialogue_id Utterance_id Text Label ...
    OUT/in-scope/video_data/swin_roi_binary.pkl          dia{d}_utt{u} -> list of T arrays (1, D_video)
    OUT/in-scope/audio_data/wavlm_feats_binary.pkl       dia{d}_utt{u} -> (T, D_audio) float32
    OUT/out-of-scope/MIntRec2.0-OOD/...                  the same for the UNK rows
    OUT/bert/config.json vocab.txt model.safetensors     a small randomly initialised BERT

CLI: ``python -m mmfuse_jax.data.synthetic.mintrec2 --out=DIR [--train=600 --oos_test=100 ...]``.
In a ``config.dataset``: ``synthetic = {generator: "mintrec2", train, dev, test, oos_*, seed}``.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pickle

import numpy as np

from mmfuse_jax.data.formats import mintrec2
from mmfuse_jax.data.synthetic import mintrec as mintrec_synth
from mmfuse_jax.data.synthetic.common import add_noise, incongruent_rows, spec_cli, write_meta, write_random_bert

MEMBERS = 3                      # known intents per topic: 10 topics x 3 = 30 intents
_SOURCES = ("Superstore", "The Big Bang Theory", "Friends")


@dataclasses.dataclass(frozen=True)
class Mintrec2Spec(mintrec_synth.SyntheticSpec):
    """Sizes of the in-scope (train/dev/test) and out-of-scope (oos_*) parts; the rest as in
    `synthetic.mintrec.SyntheticSpec`."""

    train: int = 600
    dev: int = 150
    test: int = 150
    oos_train: int = 150
    oos_dev: int = 40
    oos_test: int = 100
    oos_patterns: int = 2            # unseen cue patterns that make an utterance OOS
    dialogue_len: tuple[int, int] = (3, 9)


TINY = Mintrec2Spec(train=360, dev=45, test=45, oos_train=36, oos_dev=15, oos_test=30)
NAME = "mintrec2"                  # config.dataset.synthetic.generator
COMPLETE = os.path.join("bert", "model.safetensors")  # `write` saves the BERT last
CONFIG_FIELDS = ("train", "dev", "test", "oos_train", "oos_dev", "oos_test", "seed", "incongruity", "audio_noise",
                 "video_noise")
SPEC = Mintrec2Spec


def _example(rng, spec, patterns, topic: int, member: int, label: int) -> dict:
    where = rng.choice(["audio", "video", "both"])  # which stream(s) carry the cue
    ex = {"text": mintrec_synth.utterance(rng, topic), "label": label}
    for m, lens, dim in (("audio", spec.audio_len, spec.audio_dim), ("video", spec.video_len, spec.video_dim)):
        pattern = patterns[m][member] if where in (m, "both") else None
        ex[m] = mintrec_synth.cued_frames(rng, lens, dim, pattern, spec)
    return ex


def generate(spec: Mintrec2Spec = Mintrec2Spec()) -> dict[str, list[dict]]:
    """Examples ``{split: [dict(dialogue, utterance, key, text, label, audio, video, ...)]}`` in
    dialogue order; ``label`` is 0..29 for the known intents and 30 (`mintrec2.OOS_LABEL`) for OOS."""
    rng = np.random.default_rng(spec.seed)
    n_patterns = MEMBERS + spec.oos_patterns
    patterns = {m: rng.choice([-1.0, 1.0], (n_patterns, d)).astype(np.float32) * spec.cue_amplitude
                for m, d in (("audio", spec.audio_dim), ("video", spec.video_dim))}
    n_topics = len(mintrec2.LABELS) // MEMBERS
    splits, dialogue = {}, 0
    for split in ("train", "dev", "test"):
        is_oos = np.array([False] * getattr(spec, split) + [True] * getattr(spec, f"oos_{split}"))
        rng.shuffle(is_oos)
        # incongruity: a fraction of the in-scope examples carry the cue of another member of the topic
        flip = set(np.flatnonzero(~is_oos)[incongruent_rows(spec.seed, split, int((~is_oos).sum()),
                                                            spec.incongruity)].tolist())
        rows, i = [], 0
        while i < len(is_oos):
            n = int(rng.integers(spec.dialogue_len[0], spec.dialogue_len[1] + 1))
            dialogue += 1
            clock = 0.0
            for utt, oos in enumerate(is_oos[i:i + n]):
                topic = int(rng.integers(n_topics))
                if oos:
                    member, label = MEMBERS + int(rng.integers(spec.oos_patterns)), mintrec2.OOS_LABEL
                else:
                    member = int(rng.integers(MEMBERS))
                    label = topic * MEMBERS + member
                incongruent = (i + utt) in flip
                ex = _example(rng, spec, patterns, topic, (member + 1) % MEMBERS if incongruent else member, label)
                ex["incongruent"] = incongruent
                duration = float(rng.uniform(1.0, 4.0))
                ex.update(dialogue=dialogue, utterance=utt, key=f"dia{dialogue}_utt{utt}",
                          start=f"{clock:.3f}", end=f"{clock + duration:.3f}",
                          source=_SOURCES[dialogue % 3], speaker=f"person{int(rng.integers(1, 5))}")
                clock += duration
                rows.append(ex)
            i += n
        splits[split] = rows
        add_noise([ex["audio"] for ex in rows], spec.audio_noise, spec.seed, "audio", split)
        add_noise([ex["video"] for ex in rows], spec.video_noise, spec.seed, "video", split)
    return splits


def _write_part(folder: str, splits: dict, oos: bool) -> None:
    os.makedirs(os.path.join(folder, "video_data"), exist_ok=True)
    os.makedirs(os.path.join(folder, "audio_data"), exist_ok=True)
    audio, video = {}, {}
    for split, rows in splits.items():
        with open(os.path.join(folder, f"{split}.tsv"), "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(mintrec2.HEADER)
            for ex in rows:
                if (ex["label"] == mintrec2.OOS_LABEL) != oos:
                    continue
                name = mintrec2.OOS_NAME if oos else mintrec2.LABELS[ex["label"]]
                w.writerow([ex["dialogue"], ex["utterance"], ex["text"], name, ex["start"], ex["end"],
                            ex["source"], ex["speaker"]])
                audio[ex["key"]] = ex["audio"]
                video[ex["key"]] = [frame[None, :] for frame in ex["video"]]  # list of (1, D) as released
    for name, feats in ((mintrec2.AUDIO_PKL, audio), (mintrec2.VIDEO_PKL, video)):
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(feats, f, protocol=4)


def write(out: str, spec: Mintrec2Spec = Mintrec2Spec()) -> str:
    """Write the benchmark (and a random BERT) under ``out`` in the MIntRec2.0 layout; returns ``out``."""
    splits = generate(spec)
    _write_part(os.path.join(out, mintrec2.IN_SCOPE), splits, oos=False)
    _write_part(os.path.join(out, mintrec2.OUT_OF_SCOPE), splits, oos=True)
    write_random_bert(os.path.join(out, "bert"), mintrec_synth.vocabulary(), hidden=spec.bert_hidden,
                      layers=spec.bert_layers, heads=spec.bert_heads, seed=spec.seed)
    write_meta(out, NAME, spec, {s: [ex["key"] for ex in rows if ex["incongruent"]] for s, rows in splits.items()})
    return out


def main(argv: list[str] | None = None) -> None:
    spec_cli(argv, __doc__, Mintrec2Spec, write,
                       "synthetic MIntRec2.0-layout benchmark (in-scope + out-of-scope)")


if __name__ == "__main__":
    main()
