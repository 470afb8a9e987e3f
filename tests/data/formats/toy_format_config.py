"""A toy dataset format added from ONE file: its reader, its dataset preset and a config.

``python train.py --config=tests/data/formats/toy_format_config.py:toy --workdir=DIR
--config.dataset.root=ROOT --config.dataset.bert_path=ROOT/bert``: ml_collections executes this file,
which registers the reader (`formats.register_format`) and the preset (`configs.datasets`), then
builds an ``early_fusion`` config on it with `configs.base`. The release layout (ours)::

    ROOT/{train,dev,test}.jsonl   one {"id", "words", "label" ("no"|"yes"), "audio": [[...]], "video": [[...]]}
"""
from __future__ import annotations

import json
import os
import types

import numpy as np

from configs import base, datasets
from mmfuse_jax.data.formats import common, register_format
from mmfuse_jax.errors import DataError

LABELS = ("no", "yes")
SPLITS = ("train", "dev", "test")
FEAT_DIMS = {"audio": 3, "video": 2}


def read(root: str, *, feat_dims: dict, max_lens: dict, nonfinite: str = "error"):
    """``({split: [example]}, ReadReport)`` from ``root/<split>.jsonl``."""
    report, out = common.ReadReport(), {}
    for split in SPLITS:
        path = os.path.join(root, f"{split}.jsonl")
        if not os.path.isfile(path):
            raise DataError(path, None, "a toy split file", "no such file")
        rows = []
        with open(path) as f:
            for line, text in enumerate(f, start=1):
                raw = json.loads(text)
                ex = {"key": raw["id"], "text": raw["words"],
                      "label": common.label_index(path, line, raw["label"], LABELS)}
                for m in ("audio", "video"):
                    feats = {raw["id"]: np.asarray(raw[m], np.float32)}
                    x = common.feature_array(feats, raw["id"], path, feat_dims[m], m, nonfinite=nonfinite,
                                             report=report)
                    ex[m] = common.truncate(x, max_lens[m], m, report)
                rows.append(ex)
        out[split] = rows
    return out, report


register_format("toy", types.SimpleNamespace(read=read, LABELS=LABELS), replace=True)
datasets.register_dataset("toy", {"format": "toy", "root": "data/toy", "bert_path": "data/toy/bert",
                                  "feat_dims": FEAT_DIMS, "max_len": {"text": 8, "audio": 6, "video": 5},
                                  "num_buckets": 2}, replace=True)
PRESETS = ("toy",)


def get_config(arg: str | None = None):
    c = base.base_config("early_fusion", "tiny", dataset=base.parse_preset(arg, default="toy", presets=PRESETS))
    c.preset = "toy"
    c.model.hidden = 8
    c.num_epochs, c.batch_size, c.eval_batch_size, c.log_every = 1, 4, 4, 1
    return c
