"""Presets shared by ``configs/mult.py`` and ``configs/hct_dmg.py`` (the MulT-family affect models).

Datasets: ``mosi``, ``mosei``, ``iemocap`` (MulT pickles, unaligned; ``<name>_aligned`` for the
word-aligned files), ``urfunny`` (UR-FUNNY v2), ``mustard`` (MUStARD, fold 1), and ``demo`` /
``tiny`` (the synthetic MIntRec-layout benchmark, whose WordPiece ids the models embed with a
learned table since these models take text features, not BERT).

Hyperparameters: MulT paper Table 5 (Tsai et al. 2019, appendix) for MOSEI / MOSI / IEMOCAP:
batch 16 / 128 / 32, Adam lr 1e-3 / 1e-3 / 2e-3, d = 40, 4 crossmodal blocks, heads 8 / 10 / 10,
temporal conv kernels L/V/A (1 or 3)/3/3, (1 or 3)/3/3, 3/3/5, textual embedding dropout
0.3 / 0.2 / 0.3, crossmodal attention block dropout 0.1 / 0.2 / 0.25, output dropout 0.1,
gradient clip 1.0 / 0.8 / 0.8, epochs 20 / 100 / 30. Not in the table, from the official
main.py defaults: attention dropout of audio/video sources 0, ReLU and residual dropout 0.1, the
future attention mask on; from src/train.py: ReduceLROnPlateau on the validation loss (factor 0.1,
patience --when 20). The aligned presets reuse the unaligned numbers.
"""
from __future__ import annotations

import ml_collections

from configs.base import base_config, parse_preset
from mmfuse_jax.data import synthetic

# config preset -> `configs.datasets` entry (demo / tiny: base_config's synthetic MIntRec layout).
DATASETS = {**{n + s: f"mult_{n}{s}" for n in ("mosi", "mosei", "iemocap") for s in ("", "_aligned")},
            "urfunny": "urfunny", "mustard": "mustard", "demo": "synthetic_demo", "tiny": "synthetic_tiny"}
PRESETS = tuple(DATASETS)

# MulT Table 5. conv_kernel is (text, audio, video); "(1 or 3)" for text -> 1 (the official code's).
TABLE5 = {
    "mosei": {"batch_size": 16, "lr": 1e-3, "num_heads": 8, "conv_kernel": (1, 3, 3), "embed_dropout": 0.3,
              "attn_dropout": 0.1, "out_dropout": 0.1, "grad_clip": 1.0, "num_epochs": 20},
    "mosi": {"batch_size": 128, "lr": 1e-3, "num_heads": 10, "conv_kernel": (1, 3, 3), "embed_dropout": 0.2,
             "attn_dropout": 0.2, "out_dropout": 0.1, "grad_clip": 0.8, "num_epochs": 100},
    "iemocap": {"batch_size": 32, "lr": 2e-3, "num_heads": 10, "conv_kernel": (3, 5, 3), "embed_dropout": 0.3,
                "attn_dropout": 0.25, "out_dropout": 0.1, "grad_clip": 0.8, "num_epochs": 30},
}
# UR-FUNNY and MUStARD are not in MulT's paper: our choice, MOSEI's settings (UR-FUNNY, ~8k training
# clips) and MOSI's at batch 32 (MUStARD, ~550 training clips).
TABLE5["urfunny"] = dict(TABLE5["mosei"])
TABLE5["mustard"] = dict(TABLE5["mosi"], batch_size=32)
# Small settings for the synthetic benchmark (demo) and tests (tiny): our choice.
TABLE5["demo"] = {"batch_size": 32, "lr": 1e-3, "num_heads": 4, "conv_kernel": (1, 3, 3), "embed_dropout": 0.1,
                  "attn_dropout": 0.1, "out_dropout": 0.0, "grad_clip": 1.0, "num_epochs": 12}
# tiny: no dropout, so the eager registry tests trace no RNG (each dropout site costs seconds of
# CPU compilation); demo and the benchmark presets keep theirs.
TABLE5["tiny"] = dict(TABLE5["demo"], num_heads=2, lr=3e-3, num_epochs=12, embed_dropout=0.0, attn_dropout=0.0)

# Early stopping watches the benchmark's headline metric on dev (MulT keeps the best dev *loss*
# checkpoint and trains every epoch: patience = num_epochs reproduces "no early stop").
_MONITOR = {"mosi": ("mae", "min"), "mosei": ("mae", "min"), "iemocap": ("f1", "max"),
            "urfunny": ("acc", "max"), "mustard": ("f1", "max"), "demo": ("acc", "max"), "tiny": ("acc", "max")}

# The value the plateau schedule watches: MulT's validation loss is L1 on MOSI/MOSEI (= dev mae) and the
# 2-way cross-entropy on IEMOCAP (= dev ce) (main.py criterion_dict). UR-FUNNY, MUStARD, demo, tiny
# (not MulT's datasets): ours, the early-stopping metric.
_PLATEAU_METRIC = {"mosi": ("mae", "min"), "mosei": ("mae", "min"), "iemocap": ("ce", "min"),
                   **{k: _MONITOR[k] for k in ("urfunny", "mustard", "demo", "tiny")}}


def output_kind(ds) -> str:
    if ds.task == "regression":
        return "regression"
    return "emotion" if tuple(ds.get("label_shape", ())) else "classification"


def affect_config(model_name: str, arg: str | None) -> ml_collections.ConfigDict:
    """base_config + the dataset preset + Table 5; the model file adds its own fields."""
    preset = parse_preset(arg, default="demo", presets=PRESETS)
    base = preset.removesuffix("_aligned")
    c = base_config(model_name, preset, dataset=DATASETS[preset])
    t = TABLE5[base]
    m = c.model
    m.output = output_kind(c.dataset)
    m.dim = 40 if base not in ("demo", "tiny") else (32 if base == "demo" else 16)
    m.num_layers = 4 if base not in ("demo", "tiny") else (2 if base == "demo" else 1)
    # The memory/self-attention has max(num_layers, mem_layers) layers in both models: official
    # get_network(layers=max(self.layers, 3)), so 4 at Table 5's 4 crossmodal layers.
    m.mem_layers = 3 if base not in ("demo", "tiny") else 1
    m.num_heads, m.conv_kernel = t["num_heads"], t["conv_kernel"]
    m.embed_dropout, m.attn_dropout, m.out_dropout = t["embed_dropout"], t["attn_dropout"], t["out_dropout"]
    m.attn_dropout_audio = m.attn_dropout_video = 0.0  # main.py --attn_dropout_a / --attn_dropout_v
    m.relu_dropout = m.res_dropout = 0.1 if base != "tiny" else 0.0  # main.py defaults
    m.use_future_mask = True                       # main.py --attn_mask (on by default)
    m.pretrained_bert = False                      # no BERT: text features (or learned id embeddings)
    if base in ("demo", "tiny"):
        m.text_vocab_size, m.text_embed_dim = len(synthetic.vocabulary()), m.dim
    else:
        m.text_vocab_size, m.text_embed_dim = 0, c.dataset.feat_dims.text
    # Adam without weight decay and without warmup (MulT main.py --optim Adam), and MulT's schedule:
    # src/train.py ReduceLROnPlateau(mode='min', patience=hyp_params.when, factor=0.1), stepped once per
    # epoch on the validation loss (training/plateau.py).
    c.optimizer.lr, c.optimizer.grad_clip = t["lr"], t["grad_clip"]
    c.optimizer.weight_decay, c.optimizer.warmup_ratio = 0.0, 0.0
    c.optimizer.schedule = "plateau"
    c.optimizer.plateau = ml_collections.ConfigDict({
        "metric": _PLATEAU_METRIC[base][0], "mode": _PLATEAU_METRIC[base][1],
        "factor": 0.1,      # src/train.py
        "patience": 20 if base not in ("demo", "tiny") else 2,  # main.py --when 20; demo/tiny (12 epochs): ours
        "threshold": 1e-4, "cooldown": 0})  # torch ReduceLROnPlateau defaults (src/train.py sets neither)
    c.batch_size = c.eval_batch_size = t["batch_size"]
    c.num_epochs = t["num_epochs"]
    c.patience = c.num_epochs if base not in ("demo", "tiny") else c.patience
    c.early_stop_metric, c.early_stop_mode = _MONITOR[base]
    return c
