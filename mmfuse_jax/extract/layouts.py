"""Writers of the release layouts the readers in `mmfuse_jax.data.formats` accept unchanged.

* ``mintrec`` (`formats.mintrec`): ``{train,dev,test}.tsv`` (season episode clip text label; the
  key season_episode_clip is ``own_0_<name>``), ``audio_data/audio_feats.pkl`` (key -> [T, Da]) and
  ``video_data/video_feats.pkl`` (key -> list of T arrays (1, Dv), as MIntRec releases it). Text stays
  text: ``prepare`` tokenises it with the run's BERT vocabulary.
* ``mmsa`` (`formats.mmsa`): ``Processed/unaligned.pkl`` with ``train/valid/test`` dicts (id,
  raw_text, text_bert [N, 3, L] from the ``--bert_path`` vocabulary, zero-padded audio / vision,
  their lengths, regression_labels).

Every file is written under a temporary name and renamed, so a folder never holds half a file.
"""
from __future__ import annotations

import csv
import io
import os
import pickle

import numpy as np

MINTREC_SPLITS = {"train": "train", "dev": "dev", "test": "test"}
MMSA_SPLITS = {"train": "train", "dev": "valid", "test": "test"}


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` under a temporary name, then rename; an identical file is left untouched (so a
    rerun that changed nothing keeps ``prepare``'s fingerprint of the folder, which reads mtimes)."""
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def mintrec_key(name: str) -> str:
    return f"own_0_{name}"


def write_mintrec(out: str, rows: list[dict], feats: dict[str, dict]) -> None:
    """``rows``: dicts with name, text, label (str), split; ``feats[name]`` = {'audio', 'video'}."""
    audio, video = {}, {}
    for split, fname in MINTREC_SPLITS.items():
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        w.writerow(["season", "episode", "clip", "text", "label"])
        for r in rows:
            if r["split"] == split:
                w.writerow(["own", "0", r["name"], " ".join(r["text"].split()), r["label"]])
        atomic_write(os.path.join(out, f"{fname}.tsv"), buf.getvalue().encode("utf-8"))
    for r in rows:
        key = mintrec_key(r["name"])
        audio[key] = feats[r["name"]]["audio"]
        video[key] = [frame[None, :] for frame in feats[r["name"]]["video"]]
    atomic_write(os.path.join(out, "audio_data", "audio_feats.pkl"), pickle.dumps(audio, protocol=4))
    atomic_write(os.path.join(out, "video_data", "video_feats.pkl"), pickle.dumps(video, protocol=4))


def _padded(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.asarray([len(s) for s in seqs], np.int64)
    x = np.zeros((len(seqs), int(lens.max()), seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return x, lens


def text_bert(texts: list[str], tokenizer, max_len: int) -> np.ndarray:
    """MMSA's ``text_bert`` [N, 3, L]: token ids, attention mask, segment ids (floats, as released)."""
    from mmfuse_jax.data.pipeline import tokenize

    ids, _ = tokenize(texts, tokenizer, max_len)
    length = max(len(i) for i in ids)
    out = np.zeros((len(ids), 3, length), np.float32)
    for n, i in enumerate(ids):
        out[n, 0, : len(i)], out[n, 1, : len(i)] = i, 1
    return out


def write_mmsa(out: str, rows: list[dict], feats: dict[str, dict], tokenizer, max_text: int) -> None:
    """``rows``: dicts with name, text, label (float), split."""
    data = {}
    for split, mmsa_name in MMSA_SPLITS.items():
        sel = [r for r in rows if r["split"] == split]
        audio, a_len = _padded([feats[r["name"]]["audio"] for r in sel])
        vision, v_len = _padded([feats[r["name"]]["video"] for r in sel])
        data[mmsa_name] = {"id": [f"{r['name']}$_$0" for r in sel], "raw_text": [r["text"] for r in sel],
                           "text_bert": text_bert([r["text"] for r in sel], tokenizer, max_text),
                           "audio": audio, "audio_lengths": a_len, "vision": vision, "vision_lengths": v_len,
                           "regression_labels": np.asarray([float(r["label"]) for r in sel], np.float32)}
    atomic_write(os.path.join(out, "Processed", "unaligned.pkl"), pickle.dumps(data, protocol=4))
