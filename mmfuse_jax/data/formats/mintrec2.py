"""MIntRec2.0 (thuiar/MIntRec2.0), single-turn layout, with the out-of-scope (OOS) data.

Layout (read from the official ``data/single_turn/base.py``, ``utils.py``, ``__init__.py`` and
``configs/single_turn/__init__.py``)::

    <root>/in-scope/{train,dev,test}.tsv
        header: Dialogue_id Utterance_id Text Label Start_timestamp End_timestamp Source speaker_name
    <root>/in-scope/video_data/swin_roi_binary.pkl     key -> list of T arrays (1, 256)
    <root>/in-scope/audio_data/wavlm_feats_binary.pkl  key -> array (T, 768)
    <root>/out-of-scope/MIntRec2.0-OOD/{train,dev,test}.tsv          label 'UNK'
    <root>/out-of-scope/MIntRec2.0-OOD/video_data/swin_roi_binary.pkl   (same names, own folder)
    <root>/out-of-scope/MIntRec2.0-OOD/audio_data/wavlm_feats_binary.pkl

The key of a row is ``dia{Dialogue_id}_utt{Utterance_id}``; the text is column 2 and the label
column 3 (the official loader reads columns by position and never looks at the header; we check
the four columns it uses, names compared without case, spaces or underscores, and ignore the
rest, so ``speaker_name``/``speakername`` and friends all pass). Utterance ids have gaps: the OOS
utterances of a dialogue live in the out-of-scope files.

Classes: the classifier has ``len(LABELS) == 30`` outputs, the known intents only, as in the
official baselines (``args.num_labels = len(label_list)``); OOS is never a classifier output but the
label ``OOS_LABEL = 30`` (``args.ood_label_id``) that DOC (`mmfuse_jax.ood`) predicts by rejection.

Which OOS rows are read is ``oos_splits`` (``config.dataset.read_options.oos_splits``):
  * ``("test",)`` (default): the official open-intent evaluation of every baseline run with
    ``--ood``: train/dev are in-scope only, the OOS test rows are appended after the in-scope test.
  * ``("train", "dev", "test")``: also the OOS train rows (outlier exposure, the ``*_ood`` methods)
    and the OOS dev rows (TEXT_OOD monitors open-intent F1 on in-scope dev + OOS dev). A model's
    loss must then treat label 30 itself (`losses.classification_loss` adds outlier exposure for them).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from mmfuse_jax.data.formats import common
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import DataError

# thuiar/MIntRec2.0 data/single_turn/__init__.py, benchmarks['MIntRec2.0']['intent_labels'].
LABELS = ("Acknowledge", "Advise", "Agree", "Apologise", "Arrange",
          "Ask for help", "Asking for opinions", "Care", "Comfort", "Complain",
          "Confirm", "Criticize", "Doubt", "Emphasize", "Explain",
          "Flaunt", "Greet", "Inform", "Introduce", "Invite",
          "Joke", "Leave", "Oppose", "Plan", "Praise",
          "Prevent", "Refuse", "Taunt", "Thank", "Warn")
OOS_LABEL = len(LABELS)   # 30: args.ood_label_id = len(label_list)
OOS_NAME = "UNK"          # benchmarks['MIntRec2.0']['ood_data']['MIntRec2.0-OOD']['ood_label']
HEADER = ("Dialogue_id", "Utterance_id", "Text", "Label", "Start_timestamp", "End_timestamp", "Source",
          "speaker_name")
USED_COLUMNS = 4          # the official reader uses columns 0-3 only
SPLITS = ("train", "dev", "test")
IN_SCOPE = "in-scope"
OUT_OF_SCOPE = os.path.join("out-of-scope", "MIntRec2.0-OOD")
# configs/single_turn/__init__.py: video_feats_path['swin-roi'], audio_feats_path['wavlm'];
# run_single_turn.py: --video_data_path video_data, --audio_data_path audio_data.
VIDEO_PKL = os.path.join("video_data", "swin_roi_binary.pkl")
AUDIO_PKL = os.path.join("audio_data", "wavlm_feats_binary.pkl")


def _features(folder: str) -> dict:
    feats = {}
    for modality, name in (("video", VIDEO_PKL), ("audio", AUDIO_PKL)):
        path = os.path.join(folder, name)
        data = load_pickle(path)
        if not isinstance(data, dict):
            raise DataError(path, None, "a dict from example key to features", type(data).__name__)
        feats[modality] = (path, data)
    return feats


def _read_part(folder: str, split: str, labels: Sequence[str], feats: dict, *, feat_dims: dict,
               max_lens: dict, nonfinite: str, report: common.ReadReport) -> list[dict]:
    """Examples of ``folder/{split}.tsv`` (in-scope or out-of-scope), features looked up by key."""
    tsv = os.path.join(folder, f"{split}.tsv")
    examples = []
    for line, row in enumerate(common.read_tsv(tsv, HEADER[:USED_COLUMNS]), start=2):
        key = f"dia{row[0].strip()}_utt{row[1].strip()}"
        label = common.label_index(tsv, line, row[3].strip(), labels)
        ex = {"key": key, "text": row[2], "label": label}
        for modality in ("audio", "video"):
            path, data = feats[modality]
            x = common.feature_array(data, key, path, feat_dims[modality], modality,
                                     nonfinite=nonfinite, report=report)
            # The official padding (data/single_turn/utils.py) keeps feat[:max_length]: no bug here.
            ex[modality] = common.truncate(x, max_lens[modality], modality, report)
        examples.append(ex)
    if not examples:
        raise DataError(tsv, None, "at least one example row", "only a header")
    return examples


def read(root: str, *, feat_dims: dict, max_lens: dict, nonfinite: str = "error",
         splits: Sequence[str] = SPLITS, oos_splits: Sequence[str] = ("test",)):
    """Read the release under ``root``; returns ``({split: [example, ...]}, ReadReport)``.

    An example is ``key, text, label`` (0..29 known, 30 = OOS), ``audio`` float32 [T_a, D_a],
    ``video`` float32 [T_v, D_v]. In each split listed in ``oos_splits`` the out-of-scope rows
    follow the in-scope rows (the official order: ``test_label_ids.extend(ood_test_label_ids)``).
    In-scope files must use the 30 intents; out-of-scope files may use them or ``UNK`` (the
    official label map holds both when it reads them).
    """
    unknown = sorted(set(oos_splits) - set(SPLITS))
    if unknown:
        raise DataError(root, "read_options.oos_splits", f"a subset of {list(SPLITS)}", f"{unknown}")
    if not os.path.isdir(os.path.join(root, IN_SCOPE)):
        raise DataError(root, None, "a MIntRec2.0 release folder (in-scope/{train,dev,test}.tsv, "
                        "in-scope/video_data/, in-scope/audio_data/, out-of-scope/MIntRec2.0-OOD/)",
                        "no in-scope/ folder there")
    report = common.ReadReport()
    kw = {"feat_dims": feat_dims, "max_lens": max_lens, "nonfinite": nonfinite, "report": report}
    in_folder = os.path.join(root, IN_SCOPE)
    in_feats = _features(in_folder)
    out = {s: _read_part(in_folder, s, LABELS, in_feats, **kw) for s in splits}
    wanted = [s for s in splits if s in oos_splits]
    if wanted:
        oos_folder = os.path.join(root, OUT_OF_SCOPE)
        if not os.path.isdir(oos_folder):
            raise DataError(oos_folder, None, f"the out-of-scope release (OOS rows of {wanted})",
                            "no such folder", hint="config.dataset.read_options.oos_splits=() "
                            "reads the in-scope data only")
        oos_feats = _features(oos_folder)
        for s in wanted:
            # UNK is index 30 = OOS_LABEL: the label list with UNK appended.
            out[s] = out[s] + _read_part(oos_folder, s, (*LABELS, OOS_NAME), oos_feats, **kw)
    return out, report
