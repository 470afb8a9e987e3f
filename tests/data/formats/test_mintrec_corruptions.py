"""Corrupted MIntRec (TSV + two feature pickles) releases: a clean read or a `DataError` naming the file
(see `corruptions`)."""
from __future__ import annotations

import csv
import os
import pickle
import tempfile

import numpy as np
from conftest import write_mintrec
from corruptions import (
    BAD_KINDS,
    FILE_KINDS,
    SETTINGS,
    bad_value,
    check_examples,
    corrupt_file,
    expect_clean_outcome,
    reader_warnings,
)
from hypothesis import given
from hypothesis import strategies as st

from mmfuse_jax.data.formats import mintrec

MINTREC_DIMS = {"audio": 3, "video": 2}
MINTREC_LENS = {"text": 30, "audio": 5, "video": 4}
TSV_KINDS = ("drop_column", "unknown_label", "blank_line", "extra_column", "header_only", "bad_header",
             "not_utf8", "huge_field", "truncate", "garbage", "empty_file", "missing", "directory")


def mintrec_release(root, rng):
    rows = []
    for split, n in (("train", 3), ("dev", 2), ("test", 2)):
        for j in range(n):
            rows.append((split, f"S0{j}", f"E{split[:2]}", str(j), f"some words {j}",
                         mintrec.LABELS[int(rng.integers(0, len(mintrec.LABELS)))],
                         int(rng.integers(1, 8)), int(rng.integers(1, 6))))
    write_mintrec(root, rows, audio_dim=MINTREC_DIMS["audio"], video_dim=MINTREC_DIMS["video"],
                  extra_keys=1, seed=int(rng.integers(0, 1000)))
    return list(rows)


def corrupt_tsv(path, kind, rng):
    with open(path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f, delimiter="\t"))
    i = int(rng.integers(0, len(lines)))
    if kind == "drop_column":
        lines[i] = lines[i][:-1] if i else lines[i][1:]
    elif kind == "unknown_label":
        lines[max(i, 1)][4] = rng.choice(["Sing", "", "complain", "Ask  for help", "12"])
    elif kind == "blank_line":
        lines.insert(max(i, 1), [])
    elif kind == "extra_column":
        lines[i].append("extra")
    elif kind == "header_only":
        lines = lines[:1]
    elif kind == "bad_header":
        lines[0][int(rng.integers(0, 5))] = "nope"
    if kind in ("drop_column", "unknown_label", "blank_line", "extra_column", "header_only", "bad_header"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(lines)
    elif kind == "not_utf8":
        with open(path, "ab") as f:
            f.write(b"S9\tE9\t9\t\xff\xfe caf\xe9\tGreet\n")
    elif kind == "huge_field":  # past the csv module's field limit (128 KiB)
        with open(path, "a", encoding="utf-8") as f:
            f.write("S9\tE9\t9\t" + "x" * 200_000 + "\tGreet\n")
    else:
        corrupt_file(path, kind, rng)


@reader_warnings
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), target=st.sampled_from(["tsv", "audio", "video"]),
       tsv_kind=st.sampled_from(TSV_KINDS), file_kind=st.sampled_from(FILE_KINDS + ("entry",) * 6),
       value_kind=st.sampled_from(BAD_KINDS + ("missing_key", "video_list")),
       nonfinite=st.sampled_from(["error", "zero"]))
def test_mintrec_corruptions_raise_data_error_naming_the_file(seed, target, tsv_kind, file_kind, value_kind,
                                                               nonfinite):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "MIntRec")
        rows = mintrec_release(root, rng)
        if target == "tsv":
            corrupted = os.path.join(root, f"{rng.choice(['train', 'dev', 'test'])}.tsv")
            corrupt_tsv(corrupted, tsv_kind, rng)
        else:
            corrupted = os.path.join(root, mintrec.AUDIO_PKL if target == "audio" else mintrec.VIDEO_PKL)
            if file_kind != "entry":
                corrupt_file(corrupted, file_kind, rng)
            else:
                with open(corrupted, "rb") as f:
                    feats = pickle.load(f)
                _, season, episode, clip, *_ = rows[int(rng.integers(0, len(rows)))]
                key = f"{season}_{episode}_{clip}"
                if value_kind == "missing_key":
                    del feats[key]
                elif value_kind == "video_list":  # the release's list of (1, D) arrays, one of them wrong
                    feats[key] = [np.zeros((1, MINTREC_DIMS[target]), np.float32),
                                  np.zeros((1, MINTREC_DIMS[target] + 1), np.float32)]
                else:
                    orig = feats[key]
                    orig = np.stack(orig) if isinstance(orig, list) else orig
                    feats[key] = bad_value(value_kind, orig, rng)
                with open(corrupted, "wb") as f:
                    pickle.dump(feats, f)

        def check(result):
            splits, report = result
            check_examples(splits, MINTREC_DIMS, MINTREC_LENS, regression=False)
            if value_kind in ("nan", "inf", "huge") and target != "tsv" and file_kind == "entry":
                assert nonfinite == "zero" and report.nonfinite_replaced  # 'error' must have raised

        expect_clean_outcome(lambda: mintrec.read(root, feat_dims=MINTREC_DIMS, max_lens=MINTREC_LENS,
                                                  nonfinite=nonfinite), corrupted, check)
