"""Feature extraction from media (`mmfuse_jax.extract`): features, layouts, resume, failures, train + predict."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from extract_clips import write_clip

from mmfuse_jax.data.formats import mintrec, mmsa
from mmfuse_jax.data.synthetic.common import SPECIAL_TOKENS, write_random_bert
from mmfuse_jax.extract import audio as A
from mmfuse_jax.extract import decode
from mmfuse_jax.extract import settings as S
from mmfuse_jax.extract import video as V

WORDS = ("hello", "there", "good", "bye", "see", "you", "hi", "friend")
# name, container, tone (Hz), seconds, label, score, split
CLIPS = [("a0", "mp4", 220, 1.0, "greet", 0.6, "train"), ("a1", "mkv", 180, 0.8, "leave", -0.4, "train"),
         ("a2", "webm", 240, 1.2, "greet", 0.8, "train"), ("a3", "mp4", 200, 0.9, "leave", -0.6, "train"),
         ("a4", "mkv", 260, 1.0, "greet", 0.2, "dev"), ("a5", "mp4", 190, 1.1, "leave", -0.8, "dev"),
         ("a6", "webm", 230, 0.8, "greet", 0.4, "test"), ("a7", "mp4", 210, 1.0, "leave", -0.2, "test")]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Eight clips in three containers, one corrupt file, transcripts for both layouts, a tiny BERT."""
    root = tmp_path_factory.mktemp("media")
    clips = root / "clips"
    clips.mkdir()
    cls_rows, reg_rows = ["file\ttext\tlabel\tsplit"], ["file\ttext\tlabel\tsplit"]
    for i, (name, ext, tone, sec, label, score, split) in enumerate(CLIPS):
        write_clip(str(clips / f"{name}.{ext}"), tone=tone, seconds=sec, start=5 * i)
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
        cls_rows.append(f"{name}.{ext}\t{text}\t{label}\t{split}")
        reg_rows.append(f"{name}.{ext}\t{text}\t{score}\t{split}")
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    cls_rows.append("broken.mp4\thello there\tgreet\ttrain")
    (root / "intent.tsv").write_text("\n".join(cls_rows) + "\n")
    (root / "sentiment.tsv").write_text("\n".join(reg_rows) + "\n")
    write_random_bert(str(root / "bert"), SPECIAL_TOKENS + list(WORDS), hidden=16, layers=1, heads=2, seed=0,
                      dropout=0.0)
    return root


def _extract(media, out, layout="mintrec", tsv="intent.tsv", *extra):
    return _cli("-m", "mmfuse_jax.extract", f"--media={media / 'clips'}", f"--transcripts={media / tsv}",
                f"--layout={layout}", f"--out={out}", f"--bert_path={media / 'bert'}", "--no_progress", *extra)


@pytest.fixture(scope="module")
def intent(media):
    out = media / "intent_out"
    return out, _extract(media, out, "mintrec", "intent.tsv", "--workers=2")


def test_tone_gives_log_f0_of_220_hz(media):
    y = 0.5 * np.sin(2 * np.pi * 220 * np.arange(22050) / 22050)
    assert np.median(A.log_f0(y, 22050, frame=2048, hop=512)[2:-2, 0]) == pytest.approx(np.log(220), abs=0.005)
    feats = S.extract_file(str(media / "clips" / "a0.mp4"), S.make_settings("sims"))
    f0 = feats["audio"][3:-3, 0]   # channel 0 of the CH-SIMS set is log F0; the ends hold padding
    assert np.median(f0) == pytest.approx(np.log(220), abs=0.01)
    assert int(np.argmax(feats["audio"][10, 21:33])) == 9   # the chroma bin of A (220 Hz is A3)


def test_feature_shapes_no_face_frames_and_determinism(media):
    path = str(media / "clips" / "a2.webm")  # 1.2 s
    for audio_set, dim, hop, sr in (("sims", 33, 512, 22050), ("general", 62, 320, 16000)):
        s = S.make_settings(audio_set, fps=5.0, crop=4)
        a, b = S.extract_file(path, s), S.extract_file(path, s)
        assert a["audio"].shape[1] == dim == s["audio"]["dim"] == len(s["audio"]["channels"])
        assert abs(a["audio"].shape[0] - 1.2 * sr / hop) <= 2
        assert a["video"].shape == (6, 16 + 16)
        for m in ("audio", "video"):
            np.testing.assert_array_equal(a[m], b[m])   # same file, same features
    # A grey square is not a face: every frame is marked face = 0 with zero face channels, motion is seen.
    assert np.all(a["video"][:, :15] == 0) and np.all(a["video"][1:, 15] > 0)
    assert "face" == V.channels(4)[0] and len(V.channels(4)) == 32


def test_mintrec_layout_is_read_unchanged_and_the_corrupt_file_is_named(media, intent):
    out, r = intent
    assert r.returncode == 1, r.stderr
    assert "failed: broken: not a readable media file" in r.stderr
    assert "done 8, skipped 0 (already extracted), failed 1" in r.stderr
    info = json.loads((out / "features.json").read_text())
    assert info["labels"] == ["greet", "leave"] and info["failed"].keys() == {"broken"}
    assert info["feat_dims"] == {"audio": 33, "video": 80} and info["clips"] == {"train": 4, "dev": 2, "test": 2}
    splits, _ = mintrec.read(str(out), feat_dims=info["feat_dims"], max_lens=info["max_len"], labels=info["labels"])
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [4, 2, 2]
    ex = splits["train"][1]
    assert ex["key"] == "own_0_a1" and ex["label"] == 1 and ex["text"] == "there good bye"
    assert ex["audio"].shape == (1 + int(0.8 * 22050) // 512, 33) and ex["video"].shape == (8, 80)
    assert not list(out.glob("**/*.tmp*"))   # nothing half-written left behind


def test_mmsa_layout_is_read_unchanged(media, tmp_path):
    r = _extract(media, tmp_path / "sent", "mmsa", "sentiment.tsv", "--audio=general", "--fps=5")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "sent" / "features.json").read_text())
    assert info["task"] == "regression" and info["metric"] == "sims" and info["feat_dims"]["audio"] == 62
    splits, _ = mmsa.read(str(tmp_path / "sent"), feat_dims=info["feat_dims"], max_lens=info["max_len"])
    ex = splits["dev"][0]
    assert ex["key"] == "a4$_$0" and ex["label"] == pytest.approx(0.2)
    assert ex["audio"].shape == (1 + 16000 // 320, 62) and ex["video"].shape == (5, 80)
    assert ex["text_ids"][0] == 2 and ex["text_ids"][-1] == 3 and len(ex["text_ids"]) == 5  # [CLS] 3 words [SEP]


def test_rerun_skips_finished_files_and_redoes_a_changed_one(media, intent, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(intent[0], out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.is_file()}
    r = _extract(media, out)
    assert "done 0, skipped 8 (already extracted), failed 1" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.is_file()} == before  # nothing rewritten
    mtime = (out / "audio_data" / "audio_feats.pkl").stat().st_mtime_ns
    copy = tmp_path / "m"
    shutil.copytree(media / "clips", copy / "clips")
    shutil.copy(media / "intent.tsv", copy / "intent.tsv")
    shutil.copytree(media / "bert", copy / "bert")
    write_clip(str(copy / "clips" / "a3.mp4"), tone=300, seconds=0.9)   # new content: fingerprint differs
    r = _extract(copy, out)
    assert "done 1, skipped 7 (already extracted), failed 1" in r.stderr
    assert (out / "audio_data" / "audio_feats.pkl").stat().st_mtime_ns > mtime   # rewritten: a3 changed


def test_silent_or_streamless_media_is_a_clear_error(media, tmp_path):
    path = write_clip(str(tmp_path / "quiet.mkv"), tone=0.0, seconds=0.5)  # sin(0) = 0: digital silence
    with pytest.raises(decode.MediaError, match="silent audio"):
        S.extract_file(path, S.make_settings("sims"))
    with pytest.raises(decode.MediaError, match="not a readable media file"):
        S.extract_file(str(media / "clips" / "broken.mp4"), S.make_settings("sims"))


@pytest.mark.slow
def test_extracted_folder_trains_early_fusion_and_predict_takes_media(media, intent, tmp_path):
    out, _ = intent
    run = tmp_path / "run"
    r = _cli("train.py", f"--config=configs/media.py:early_fusion,tiny,{out}", f"--workdir={run}",
             "--config.num_epochs=1", "--config.batch_size=4", "--config.eval_batch_size=4",
             "--config.dataset.prepared_dir=" + str(tmp_path / "prepared"))
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads((run / "config.json").read_text())
    assert saved["dataset"]["features"]["fingerprint"] == json.loads((out / "features.json").read_text())["fingerprint"]
    r = _cli("predict.py", f"--workdir={run}", f"--media={media / 'clips' / 'a6.webm'}", "--text=hi friend")
    assert r.returncode == 0, r.stderr[-3000:]
    pred = json.loads(r.stdout.strip().splitlines()[-1])
    assert pred["label"] in ("greet", "leave") and set(pred["probabilities"]) == {"greet", "leave"}
    assert pred["missing_modalities"] == []
    r = _cli("predict.py", f"--workdir={run}", f"--media={media / 'clips' / 'broken.mp4'}", "--text=hi")
    assert r.returncode != 0 and "broken.mp4" in r.stderr and "not a readable media file" in r.stderr


def test_predict_refuses_runs_it_cannot_reproduce():
    import ml_collections

    from mmfuse_jax.errors import ConfigError
    from mmfuse_jax.extract import media as M

    s = S.make_settings("general")
    ok = ml_collections.ConfigDict({"dataset": {"features": {"fingerprint": S.fingerprint(s), "settings": s}}})
    assert M.run_settings(ok) == s
    with pytest.raises(ConfigError, match="not trained on features"):
        M.run_settings(ml_collections.ConfigDict({"dataset": {"format": "mintrec"}}))
    edited = ml_collections.ConfigDict(ok.to_dict())
    edited.dataset.features.settings.video.fps = 25.0   # media would be processed differently
    with pytest.raises(ConfigError, match="no longer match their fingerprint"):
        M.run_settings(edited)
    old = dict(s, version=S.VERSION - 1)
    with pytest.raises(ConfigError, match="extractor version"):
        M.run_settings(ml_collections.ConfigDict({"dataset": {"features": {"fingerprint": S.fingerprint(old),
                                                                           "settings": old}}}))
