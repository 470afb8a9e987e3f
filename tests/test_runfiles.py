"""Run-folder files: predictions round trip, eval records, config lookups, errors that name the file."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mmfuse_jax import runfiles
from mmfuse_jax.errors import DataError


def test_predictions_round_trip_with_small_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    pred = {"logits": rng.normal(size=(5, 3)).astype(np.float32), "label": np.arange(5),
            "embedding": rng.normal(size=(5, 7))}
    path = runfiles.save_predictions(str(tmp_path), "dev", pred)
    assert path == runfiles.predictions_path(str(tmp_path), "dev") and path.endswith("predictions_dev.npz")
    back = runfiles.load_predictions(str(tmp_path), "dev")
    assert set(back) == set(pred) and back["embedding"].dtype == np.float16  # kept small
    np.testing.assert_array_equal(back["logits"], pred["logits"])
    np.testing.assert_allclose(back["embedding"], pred["embedding"], atol=1e-2)
    assert runfiles.load_predictions(str(tmp_path), "test") is None


def test_require_predictions_names_the_file_and_key(tmp_path):
    with pytest.raises(DataError, match=r"predictions_test.npz expected the predictions eval.py saves"):
        runfiles.require_predictions(str(tmp_path), "test", "ratio", "ratios")
    runfiles.save_predictions(str(tmp_path), "test", {"label": np.zeros(2), "prediction": np.zeros(2)})
    with pytest.raises(DataError, match=r"predictions_test.npz: ratio expected per-sample ratios, got absent "
                                        r"\(keys: \['label', 'prediction'\]\)"):
        runfiles.require_predictions(str(tmp_path), "test", "ratio", "per-sample ratios")


def test_eval_records_in_split_order_and_config(tmp_path):
    for split in ("test", "dev"):
        with open(tmp_path / f"eval_{split}.json", "w") as f:
            json.dump({"split": split, "metrics": {"acc": 0.5}}, f)
    assert list(runfiles.eval_records(str(tmp_path))) == ["dev", "test"]
    with pytest.raises(DataError, match="config.json expected the config a training run saves"):
        runfiles.read_config(str(tmp_path))
    config = {"model_name": "text_only", "dataset": {"name": "mintrec2", "format": "mintrec2", "oos_label": 30}}
    with open(os.path.join(tmp_path, runfiles.CONFIG_FILE), "w") as f:
        json.dump(config, f)
    assert runfiles.read_config(str(tmp_path)) == config
    assert runfiles.config_value(config, "dataset.oos_label") == 30
    assert runfiles.config_value(config, "dataset.nope.deeper") is None
    assert runfiles.run_title(config, "test") == "text_only on mintrec2, test"


def test_class_names_come_from_the_dataset_format():
    from mmfuse_jax.data.formats import mintrec2

    config = {"dataset": {"format": "mintrec2", "oos_label": 30}}
    names, oos = runfiles.label_names(config)
    assert names == list(mintrec2.LABELS) and oos == "UNK"
    assert runfiles.class_names(config, 30) == list(mintrec2.LABELS)
    assert runfiles.class_names({"dataset": {"format": "mmsa"}}, 3) == ["0", "1", "2"]  # regression: no names
    assert runfiles.label_names({"dataset": {"format": "mintrec2"}})[1] is None  # no OOS in this run
