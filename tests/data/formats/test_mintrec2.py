"""The MIntRec2.0 reader on fixtures written in the release layout."""
from __future__ import annotations

import csv
import os
import pickle

import numpy as np
import pytest

from mmfuse_jax.data.formats import FORMATS, mintrec2
from mmfuse_jax.errors import DataError

DIMS = {"audio": 6, "video": 5}
LENS = {"text": 50, "audio": 8, "video": 7}
HEADER = ["Dialogue_id", "Utterance_id", "Text", "Label", "Start_timestamp", "End_timestamp", "Source",
          "speaker_name"]
OOS_DIR = os.path.join("out-of-scope", "MIntRec2.0-OOD")

# (split, dialogue, utterance, text, label[, T_audio, T_video]); utterance ids have gaps where the
# OOS rows of the same dialogue sit.
IN_ROWS = [
    ("train", 1, 0, "yeah, right", "Acknowledge", 9, 6),
    ("train", 1, 2, "could you give me a hand", "Ask for help", 5, 3),
    ("train", 2, 0, "you should not", "Warn", 12, 8),
    ("dev", 3, 1, "thanks a lot", "Thank", 4, 2),
    ("test", 4, 0, "see you later", "Leave", 6, 5),
    ("test", 4, 3, "i promise", "Confirm", 3, 3),
]
OOS_ROWS = [
    ("train", 1, 1, "what a weird hat", "UNK", 4, 4),
    ("dev", 3, 0, "hmm", "UNK", 3, 2),
    ("test", 4, 1, "the sky is blue", "UNK", 5, 4),
    ("test", 4, 2, "whatever", "UNK", 7, 9),
]


def _write_part(folder, rows, rng, header, extra_keys, audio, video):
    os.makedirs(os.path.join(folder, "audio_data"), exist_ok=True)
    os.makedirs(os.path.join(folder, "video_data"), exist_ok=True)
    a, v = {}, {}
    for split in ("train", "dev", "test"):
        with open(os.path.join(folder, f"{split}.tsv"), "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(header)
            for s, dia, utt, text, label, t_a, t_v in rows:
                if s != split:
                    continue
                w.writerow([dia, utt, text, label, "0.000", "1.500", "Friends", "Joey"])
                a[f"dia{dia}_utt{utt}"] = rng.standard_normal((t_a, DIMS["audio"])).astype(np.float32)
                v[f"dia{dia}_utt{utt}"] = [rng.standard_normal((1, DIMS["video"])).astype(np.float32)
                                           for _ in range(t_v)]
    for i in range(extra_keys):  # keys no TSV row uses, as in the real pickles
        a[f"dia999_utt{i}"] = rng.standard_normal((3, DIMS["audio"])).astype(np.float32)
        v[f"dia999_utt{i}"] = [rng.standard_normal((1, DIMS["video"])).astype(np.float32)]
    a.update(audio or {})
    v.update(video or {})
    with open(os.path.join(folder, mintrec2.AUDIO_PKL), "wb") as f:
        pickle.dump(a, f)
    with open(os.path.join(folder, mintrec2.VIDEO_PKL), "wb") as f:
        pickle.dump(v, f)


def write_mintrec2(root, in_rows=IN_ROWS, oos_rows=OOS_ROWS, *, header=HEADER, seed=0, audio=None,
                   video=None, oos_audio=None):
    """A MIntRec2.0 single-turn release under ``root`` (random features unless overridden)."""
    rng = np.random.default_rng(seed)
    _write_part(os.path.join(root, "in-scope"), in_rows, rng, header, 2, audio, video)
    _write_part(os.path.join(root, OOS_DIR), oos_rows, rng, header, 1, oos_audio, None)
    return root


def read(root, **kw):
    return mintrec2.read(root, feat_dims=DIMS, max_lens=LENS, **kw)


@pytest.fixture
def root(tmp_path):
    return write_mintrec2(str(tmp_path / "MIntRec2.0"))


def test_reads_release_layout_with_oos_test_appended(root):
    splits, report = read(root)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [3, 1, 4]
    first = splits["train"][0]
    assert first["key"] == "dia1_utt0" and first["text"] == "yeah, right"
    # Official (alphabetical) order: Acknowledge 0, Ask for help 5, Warn 29, Leave 21, Confirm 10.
    assert [e["label"] for e in splits["train"]] == [0, 5, 29]
    assert first["audio"].shape == (8, 6) and first["audio"].dtype == np.float32  # 9 frames -> 8
    assert first["video"].shape == (6, 5)                                          # (1, 5) arrays squeezed
    # In-scope test rows first, then the OOS test rows, labelled UNK -> 30 (official extend order).
    assert [(e["key"], e["label"]) for e in splits["test"]] == [
        ("dia4_utt0", 21), ("dia4_utt3", 10), ("dia4_utt1", 30), ("dia4_utt2", 30)]
    assert splits["test"][3]["video"].shape == (7, 5)  # OOS features from their own pickle, truncated
    assert report.truncated == {"audio": 2, "video": 2}  # audio 9, 12 > 8; video 8, 9 (OOS) > 7
    assert mintrec2.OOS_LABEL == 30 == len(mintrec2.LABELS) and FORMATS["mintrec2"] is mintrec2


def test_oos_splits_switch(root):
    splits, _ = read(root, oos_splits=("train", "dev", "test"))
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [4, 2, 4]
    assert [e["label"] for e in splits["train"]] == [0, 5, 29, 30]
    assert splits["dev"][-1]["key"] == "dia3_utt0" and splits["dev"][-1]["label"] == 30
    # Without OOS rows the out-of-scope folder is not needed at all.
    import shutil

    shutil.rmtree(os.path.join(root, "out-of-scope"))
    splits, _ = read(root, oos_splits=())
    assert all(e["label"] < 30 for rows in splits.values() for e in rows)
    with pytest.raises(DataError, match=r"MIntRec2\.0-OOD expected the out-of-scope release.*oos_splits=\(\)"):
        read(root)
    with pytest.raises(DataError, match=r"read_options\.oos_splits expected a subset"):
        read(root, oos_splits=("valid",))


def test_gaps_in_utterance_ids_and_keys_from_the_right_pickle(root):
    splits, _ = read(root)
    keys = {e["key"]: e for rows in splits.values() for e in rows}
    assert "dia1_utt1" not in keys and {"dia1_utt0", "dia1_utt2", "dia4_utt1"} <= set(keys)
    with open(os.path.join(root, OOS_DIR, mintrec2.AUDIO_PKL), "rb") as f:
        oos_audio = pickle.load(f)
    np.testing.assert_array_equal(keys["dia4_utt1"]["audio"], oos_audio["dia4_utt1"])


def test_truncation_keeps_first_frames(tmp_path):
    audio = {"dia1_utt0": np.arange(10 * 6, dtype=np.float32).reshape(10, 6)}
    root = write_mintrec2(str(tmp_path / "r"), audio=audio)
    splits, _ = read(root)
    np.testing.assert_array_equal(splits["train"][0]["audio"], audio["dia1_utt0"][:8])


def test_unknown_label_names_file_line_and_label(tmp_path):
    rows = IN_ROWS[:3] + [("dev", 3, 1, "la la", "Sing", 4, 2)] + IN_ROWS[4:]
    root = write_mintrec2(str(tmp_path / "r"), rows)
    with pytest.raises(DataError, match=r"dev\.tsv: line 2 column 'label'.*'Sing'"):
        read(root)


def test_unk_only_in_out_of_scope_files(tmp_path):
    rows = IN_ROWS[:3] + [("dev", 3, 1, "hmm", "UNK", 4, 2)] + IN_ROWS[4:]
    with pytest.raises(DataError, match=r"dev\.tsv: line 2 column 'label'.*'UNK'.*in-scope/dev\.tsv"):
        read(write_mintrec2(str(tmp_path / "a"), rows))
    # The official label map holds the 30 intents and UNK when it reads the OOS files.
    oos = OOS_ROWS[:2] + [("test", 4, 1, "the sky is blue", "Inform", 5, 4)] + OOS_ROWS[3:]
    splits, _ = read(write_mintrec2(str(tmp_path / "b"), oos_rows=oos))
    assert [e["label"] for e in splits["test"]] == [21, 10, 17, 30]


def test_missing_key_names_pickle_and_key(tmp_path):
    root = write_mintrec2(str(tmp_path / "r"))
    path = os.path.join(root, OOS_DIR, mintrec2.AUDIO_PKL)
    with open(path, "rb") as f:
        feats = pickle.load(f)
    del feats["dia4_utt2"]
    with open(path, "wb") as f:
        pickle.dump(feats, f)
    with pytest.raises(DataError, match=r"wavlm_feats_binary\.pkl: key 'dia4_utt2' expected a audio feature"):
        read(root)


def test_wrong_feature_dims(tmp_path):
    root = write_mintrec2(str(tmp_path / "r"), video={"dia2_utt0": [np.zeros((1, 256), np.float32)] * 3})
    with pytest.raises(DataError, match=r"swin_roi_binary\.pkl: key 'dia2_utt0' expected video features "
                                        r"\[T, 5\], got shape \[3, 256\]"):
        read(root)
    root = write_mintrec2(str(tmp_path / "s"), oos_audio={"dia3_utt0": np.zeros((4, 768), np.float32)})
    with pytest.raises(DataError, match=r"key 'dia3_utt0' expected audio features \[T, 6\]"):
        read(root, oos_splits=("dev",))


def test_header_spellings(tmp_path):
    other = ["dialogue_ID", "Utterance_Id", "text", "label", "start timestamp", "end", "source", "speakername"]
    splits, _ = read(write_mintrec2(str(tmp_path / "a"), header=other))
    assert len(splits["test"]) == 4
    bad = ["Dialogue_id", "Text", "Utterance_id", "Label"] + HEADER[4:]
    with pytest.raises(DataError, match=r"train\.tsv: header expected columns"):
        read(write_mintrec2(str(tmp_path / "b"), header=bad))
