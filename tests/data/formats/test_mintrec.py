"""The MIntRec reader on fixtures written in the release layout, including bad inputs."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from conftest import SMALL_ROWS, write_mintrec

from mmfuse_jax.data.formats import mintrec
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import DataError

DIMS = {"audio": 6, "video": 5}
LENS = {"text": 30, "audio": 8, "video": 7}


def read(root, **kw):
    return mintrec.read(root, feat_dims=DIMS, max_lens=LENS, **kw)


def test_reads_release_layout(mintrec_root):
    splits, report = read(mintrec_root)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [3, 1, 1]
    first = splits["train"][0]
    assert first["key"] == "S05_E16_329" and first["text"] == "i am so sorry"
    # Official label order: Apologise is index 2, Ask for help the last (19).
    assert first["label"] == 2 and splits["train"][1]["label"] == 19
    assert first["audio"].shape == (8, 6)   # 9 frames truncated to max 8
    assert first["video"].shape == (6, 5)   # list of (1, 5) arrays squeezed
    assert report.truncated == {"audio": 2, "video": 1}  # audio: 9 and 12 > 8; video: 8 > 7
    assert first["audio"].dtype == np.float32


def test_truncation_keeps_first_frames(tmp_path):
    audio = {"S01_E01_1": np.arange(10 * 6, dtype=np.float32).reshape(10, 6)}
    root = write_mintrec(str(tmp_path / "r"), [("train", "S01", "E01", "1", "hi", "Greet"),
                                               ("dev", "S01", "E01", "2", "hi", "Greet"),
                                               ("test", "S01", "E01", "3", "hi", "Greet")], audio=audio)
    splits, _ = read(root)
    np.testing.assert_array_equal(splits["train"][0]["audio"], audio["S01_E01_1"][:8])


def test_unknown_label_names_file_line_and_label(tmp_path):
    rows = SMALL_ROWS[:3] + [("dev", "S03", "E01", "4", "la la", "Sing")] + SMALL_ROWS[4:]
    root = write_mintrec(str(tmp_path / "r"), rows)
    with pytest.raises(DataError, match=r"dev\.tsv: line 2 column 'label'.*'Sing'"):
        read(root)


def test_missing_feature_key_names_pickle_and_key(mintrec_root):
    path = os.path.join(mintrec_root, "audio_data", "audio_feats.pkl")
    feats = load_pickle(path)
    del feats["S02_E03_11"]
    with open(path, "wb") as f:
        pickle.dump(feats, f)
    with pytest.raises(DataError, match=r"audio_feats\.pkl: key 'S02_E03_11' expected a audio feature entry"):
        read(mintrec_root)


def test_wrong_feature_dim(tmp_path):
    root = write_mintrec(str(tmp_path / "r"), SMALL_ROWS,
                         audio={"S01_E02_7": np.zeros((5, 768), np.float32)})
    with pytest.raises(DataError, match=r"key 'S01_E02_7' expected audio features \[T, 6\], got shape \[5, 768\]"):
        read(root)


def test_nonfinite_policy(tmp_path):
    bad = np.ones((4, 6), np.float32)
    bad[1, 2], bad[3, 0] = np.nan, -np.inf
    root = write_mintrec(str(tmp_path / "r"), SMALL_ROWS, audio={"S03_E01_4": bad})
    with pytest.raises(DataError, match=r"key 'S03_E01_4' expected finite audio values, got 2 NaN/inf"):
        read(root)
    splits, report = read(root, nonfinite="zero")
    assert report.nonfinite_replaced == {"audio": 2}
    assert np.isfinite(splits["dev"][0]["audio"]).all() and splits["dev"][0]["audio"][1, 2] == 0


def test_empty_sequence(tmp_path):
    root = write_mintrec(str(tmp_path / "r"), SMALL_ROWS, video={"S04_E09_120": []})
    with pytest.raises(DataError, match=r"S04_E09_120.*non-empty video sequence"):
        read(root)


def test_missing_files_and_bad_tsv(tmp_path, mintrec_root):
    with pytest.raises(DataError, match="no such folder"):
        read(str(tmp_path / "nowhere"))
    os.remove(os.path.join(mintrec_root, "test.tsv"))
    with pytest.raises(DataError, match=r"test\.tsv.*nothing at that path"):
        read(mintrec_root)
    with open(os.path.join(mintrec_root, "test.tsv"), "w") as f:
        f.write("a\tb\tc\n")
    with pytest.raises(DataError, match=r"test\.tsv: header expected columns"):
        read(mintrec_root)
    with open(os.path.join(mintrec_root, "test.tsv"), "w") as f:
        f.write("season\tepisode\tclip\ttext\tlabel\nS01\tE01\t5\tno label here\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 2 expected 5 tab-separated columns"):
        read(mintrec_root)


def test_corrupt_pickle(mintrec_root):
    path = os.path.join(mintrec_root, "video_data", "video_feats.pkl")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"video_feats\.pkl expected a readable pickle"):
        read(mintrec_root)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path, mintrec_root):
    marker = tmp_path / "pwned"
    path = os.path.join(mintrec_root, "audio_data", "audio_feats.pkl")
    with open(path, "wb") as f:
        pickle.dump({"S05_E16_329": _Evil(marker)}, f)
    with pytest.raises(DataError, match=r"audio_feats\.pkl: global '(posix|os|nt)\.system'.*refused"):
        read(mintrec_root)
    assert not marker.exists()


def test_torch_pickle_gets_a_conversion_hint(tmp_path):
    # A pickle referencing torch's rebuild function (as torch.save'd tensors do), built by hand.
    path = tmp_path / "t.pkl"
    path.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00.")
    with pytest.raises(DataError, match="torch objects; convert it once"):
        load_pickle(path)


def test_numpy1_pickles_load(tmp_path):
    x = {"k": np.arange(12, dtype=np.float32).reshape(3, 4)}
    raw = pickle.dumps(x, protocol=2).replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in raw
    path = tmp_path / "old.pkl"
    path.write_bytes(raw)
    np.testing.assert_array_equal(load_pickle(path)["k"], x["k"])
