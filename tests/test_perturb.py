"""Evaluation perturbations: each changes only its modality (and only real rows), seeded; bad specs fail clearly."""
from __future__ import annotations

import subprocess
import sys

import chex
import numpy as np
import pytest
from conftest import REPO

from mmfuse_jax import perturb
from mmfuse_jax.errors import ConfigError

KEYS = {"text": ("text_ids", "text_mask", "text_type_ids"), "audio": ("audio", "audio_mask"),
        "video": ("video", "video_mask")}


def _batch(b=5, lt=7, la=9, lv=4):
    rng = np.random.default_rng(0)
    tl, al, vl = [7, 5, 3, 6, 4], [9, 2, 5, 8, 3], [4, 1, 3, 2, 4]
    mask = lambda lens, n: (np.arange(n)[None] < np.asarray(lens)[:, None]).astype(np.int32)
    tm, am, vm = mask(tl, lt), mask(al, la), mask(vl, lv)
    valid = np.array([1, 1, 1, 1, 0], np.float32)  # the last row pads the batch
    return {"text_ids": (rng.integers(5, 50, (b, lt)) * tm).astype(np.int32), "text_mask": tm,
            "text_type_ids": np.zeros((b, lt), np.int32),
            "audio": (rng.standard_normal((b, la, 6)) * am[..., None]).astype(np.float32), "audio_mask": am,
            "video": (rng.standard_normal((b, lv, 3)) * vm[..., None]).astype(np.float32), "video_mask": vm,
            "label": np.arange(b, dtype=np.int32), "valid": valid}


def _changed(before, after):
    return {k for k in before if not np.array_equal(before[k], after[k])}


@pytest.mark.parametrize("spec,modality", [
    ("drop:audio", "audio"), ("drop:video", "video"), ("drop:text", "text"), ("zero:audio", "audio"),
    ("noise:video:0.5", "video"), ("noise:audio:2", "audio"), ("shuffle:audio", "audio"),
    ("shuffle:video", "video"), ("shuffle:text", "text")])
def test_each_perturbation_changes_only_its_modality(spec, modality):
    batch = _batch()
    copy = {k: v.copy() for k, v in batch.items()}
    out = perturb.apply(batch, spec, seed=3, index=1)
    chex.assert_trees_all_equal(batch, copy)  # the input is not modified
    chex.assert_trees_all_equal_shapes_and_dtypes(out, batch)
    changed = _changed(batch, out)
    assert changed and changed <= set(KEYS[modality]), changed
    for k in KEYS[modality]:  # the padding row of the batch is untouched
        np.testing.assert_array_equal(out[k][4], batch[k][4])
    chex.assert_trees_all_equal(out, perturb.apply(batch, spec, seed=3, index=1))  # seeded


def test_what_each_kind_does():
    b = _batch()
    drop = perturb.apply(b, "drop:audio")
    assert not drop["audio"][:4].any() and not drop["audio_mask"][:4].any()
    zero = perturb.apply(b, "zero:video")
    assert not zero["video"][:4].any()
    np.testing.assert_array_equal(zero["video_mask"], b["video_mask"])
    text = perturb.apply(b, "drop:text")  # the empty utterance: [CLS] ... [SEP] kept
    np.testing.assert_array_equal(text["text_mask"].sum(1)[:4], [2, 2, 2, 2])
    np.testing.assert_array_equal(text["text_ids"][1, [0, 4]], b["text_ids"][1, [0, 4]])
    noise = perturb.apply(b, "noise:audio:0.5")
    diff = noise["audio"] - b["audio"]
    assert not diff[b["audio_mask"] == 0].any()  # padding frames stay zero
    assert 0.4 < diff[b["audio_mask"] == 1].std() < 0.6
    shuffled = perturb.apply(b, "shuffle:audio", seed=1)
    for i in range(4):  # every real row holds another real row's audio and mask
        src = [j for j in range(4) if np.array_equal(shuffled["audio"][i], b["audio"][j])]
        assert src and src[0] != i and np.array_equal(shuffled["audio_mask"][i], b["audio_mask"][src[0]])
    both = perturb.apply(b, "drop:audio,noise:video:1")
    assert _changed(b, both) == {"audio", "audio_mask", "video"}
    assert perturb.file_suffix("drop:audio,noise:video:0.5") == "__drop-audio+noise-video-0.5"
    assert perturb.file_suffix("") == ""


@pytest.mark.parametrize("spec,message", [
    ("drop", "is not <kind>:<modality>"), ("blur:audio", "is not <kind>:<modality>"),
    ("drop:smell", "unknown modality 'smell'"), ("noise:audio", "positive standard deviation"),
    ("noise:audio:-1", "positive standard deviation"), ("drop:audio:3", "takes no argument")])
def test_bad_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        perturb.parse(spec)


def test_zeroing_token_ids_is_refused():
    with pytest.raises(ConfigError, match="use drop:text"):
        perturb.apply(_batch(), "zero:text")


def test_eval_cli_bad_spec_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, "eval.py", "--config=configs/text_only.py:tiny", f"--workdir={tmp_path}",
                        "--perturb=noise:audio"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "positive standard deviation" in errors[0], r.stderr
