"""The synthetic knobs: incongruity changes exactly the advertised fraction of examples (recorded by id),
noise only the features it names, and both at 0 leave the benchmark as it was."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from mmfuse_jax.data import synthetic
from mmfuse_jax.data.synthetic import mintrec2, mmsa
from mmfuse_jax.errors import ConfigError

SMALL = synthetic.SyntheticSpec(train=40, dev=12, test=10, bert_hidden=8, bert_layers=1, bert_heads=1)


def _differs(a, b) -> bool:
    return not (np.array_equal(a["audio"], b["audio"]) and np.array_equal(a["video"], b["video"]))


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_mintrec_incongruity_changes_exactly_the_advertised_examples(fraction):
    clean, knob = synthetic.generate(SMALL), synthetic.generate(dataclasses.replace(SMALL, incongruity=fraction))
    for split, rows in clean.items():
        flipped = [i for i, ex in enumerate(knob[split]) if ex["incongruent"]]
        assert len(flipped) == round(fraction * len(rows))
        for i, (a, b) in enumerate(zip(rows, knob[split])):
            assert (a["text"], a["label"]) == (b["text"], b["label"])  # text and label never change
            assert _differs(a, b) == (i in flipped)  # the cue moves exactly on the recorded examples


def test_mintrec2_incongruity_touches_in_scope_examples_only():
    spec = dataclasses.replace(mintrec2.TINY, incongruity=0.2)
    clean, knob = mintrec2.generate(mintrec2.TINY), mintrec2.generate(spec)
    for split, rows in clean.items():
        in_scope = [i for i, ex in enumerate(rows) if ex["label"] != 30]
        changed = [i for i, (a, b) in enumerate(zip(rows, knob[split])) if _differs(a, b)]
        assert changed == [i for i, ex in enumerate(knob[split]) if ex["incongruent"]]
        assert len(changed) == round(0.2 * len(in_scope)) and set(changed) <= set(in_scope)


def test_mmsa_incongruity_flips_audio_and_video_against_the_text():
    base = mmsa.SyntheticMMSASpec(train=30, dev=10, test=10)
    clean, knob = mmsa.generate(base), mmsa.generate(dataclasses.replace(base, incongruity=0.3))
    for split, d in clean.items():
        rows = mmsa.incongruent_rows(base.seed, split, len(d["id"]), 0.3)
        assert len(rows) == round(0.3 * len(d["id"]))
        k = knob[split]
        np.testing.assert_array_equal(k["regression_labels"], d["regression_labels"])
        np.testing.assert_array_equal(k["regression_labels_A"][rows], -k["regression_labels_T"][rows])
        np.testing.assert_array_equal(k["regression_labels_V"][rows], -k["regression_labels_T"][rows])
        others = np.setdiff1d(np.arange(len(d["id"])), rows)
        np.testing.assert_array_equal(k["audio"][others], d["audio"][others])


def test_noise_changes_only_its_modality_and_zero_knobs_are_the_old_benchmark():
    noisy = synthetic.generate(dataclasses.replace(SMALL, audio_noise=0.5))
    clean = synthetic.generate(SMALL)
    for a, b in zip(clean["train"], noisy["train"]):
        assert np.array_equal(a["video"], b["video"]) and not np.array_equal(a["audio"], b["audio"])
        assert 0.3 < np.std(b["audio"] - a["audio"]) < 0.7
    zero = synthetic.generate(dataclasses.replace(SMALL, incongruity=0.0, audio_noise=0.0, video_noise=0.0))
    assert all(np.array_equal(a["audio"], b["audio"]) for a, b in zip(clean["test"], zero["test"]))


def test_metadata_records_the_ids_and_a_changed_knob_on_the_same_root_is_refused(tmp_path):
    root = str(tmp_path / "b")
    spec = dataclasses.replace(SMALL, incongruity=0.5)
    synthetic.write(root, spec)
    with open(os.path.join(root, "synthetic.json")) as f:
        meta = json.load(f)
    assert meta["spec"]["incongruity"] == 0.5 and meta["incongruent_counts"] == {"train": 20, "dev": 6, "test": 5}
    keys = [ex["key"] for ex in synthetic.generate(spec)["test"] if ex["incongruent"]]
    assert meta["incongruent"]["test"] == keys
    ds = {"root": root, "synthetic": synthetic.config_fields("mintrec", spec)}

    class DS(dict):
        def __getattr__(self, k):
            return self[k]

    synthetic.ensure(DS(ds))  # the same knobs: nothing to do
    ds["synthetic"]["incongruity"] = 0.1
    with pytest.raises(ConfigError, match="incongruity=0.5"):
        synthetic.ensure(DS(ds))
    ds["synthetic"]["incongruity"] = 0.5
    ds["synthetic"]["train"] = spec.train + 7  # sizes are not knobs: a root written on purpose is reused
    synthetic.ensure(DS(ds))
