"""MIntRec (thuiar/MIntRec) as released.

Layout (read from the official `data/base.py`, `video_pre.py`, `audio_pre.py`)::

    <root>/train.tsv dev.tsv test.tsv       header: season episode clip text label
    <root>/video_data/video_feats.pkl       key -> list of T arrays (1, 256)
    <root>/audio_data/audio_feats.pkl       key -> array (T, 768)

The example key is ``'_'.join([season, episode, clip])``, e.g. ``S05_E16_329``.
Labels map to indices in the official order below (spelling as in the code).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from mmfuse_jax.data.formats import common
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import DataError

# thuiar/MIntRec data/__init__.py, benchmarks['MIntRec']['intent_labels'].
LABELS = ("Complain", "Praise", "Apologise", "Thank", "Criticize", "Agree", "Taunt", "Flaunt",
          "Joke", "Oppose", "Comfort", "Care", "Inform", "Advise", "Arrange", "Introduce", "Leave",
          "Prevent", "Greet", "Ask for help")
HEADER = ("season", "episode", "clip", "text", "label")
SPLITS = ("train", "dev", "test")
VIDEO_PKL = os.path.join("video_data", "video_feats.pkl")
AUDIO_PKL = os.path.join("audio_data", "audio_feats.pkl")


def read(root: str, *, feat_dims: dict, max_lens: dict, splits: Sequence[str] = SPLITS,
         labels: Sequence[str] = LABELS, nonfinite: str = "error"):
    """Read the release under ``root``.

    Returns ``({split: [example, ...]}, ReadReport)``. Feature pickles are loaded once and looked
    up by key (they may hold keys no TSV row uses, in any order).
    """
    if not os.path.isdir(root):
        raise DataError(root, None, "a MIntRec release folder (train.tsv, dev.tsv, test.tsv, "
                        "video_data/, audio_data/)", "no such folder")
    rows = {s: common.read_tsv(os.path.join(root, f"{s}.tsv"), HEADER) for s in splits}
    video_path, audio_path = os.path.join(root, VIDEO_PKL), os.path.join(root, AUDIO_PKL)
    video, audio = load_pickle(video_path), load_pickle(audio_path)
    for path, feats in ((video_path, video), (audio_path, audio)):
        if not isinstance(feats, dict):
            raise DataError(path, None, "a dict from example key to features", type(feats).__name__)
    report = common.ReadReport()
    out = {}
    for split in splits:
        tsv = os.path.join(root, f"{split}.tsv")
        examples = []
        for line, row in enumerate(rows[split], start=2):
            key = "_".join(c.strip() for c in row[:3])
            ex = {"key": key, "text": row[3], "label": common.label_index(tsv, line, row[4].strip(), labels)}
            for modality, feats, path in (("audio", audio, audio_path), ("video", video, video_path)):
                x = common.feature_array(feats, key, path, feat_dims[modality], modality,
                                         nonfinite=nonfinite, report=report)
                ex[modality] = common.truncate(x, max_lens[modality], modality, report)
            examples.append(ex)
        if not examples:
            raise DataError(tsv, None, "at least one example row", "only a header")
        out[split] = examples
    return out, report
