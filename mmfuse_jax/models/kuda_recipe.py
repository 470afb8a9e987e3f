"""KuDA's training recipe (`registry.Stage`s): stage 1 (pretrain.py: each modality's encoder and
decoder on unimodal labels, optionally on an external knowledge dataset), then stage 2 (train.py:
the whole model, warm-started from stage 1 with the adapters and decoders frozen). `models.kuda`
registers `stages` on its spec; the generic runner (`training/stages.py`, `loop.run`) trains them.
"""
from __future__ import annotations

import copy
import functools
import os

from mmfuse_jax import metrics as metrics_lib
from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError, DataError

MODALITIES = ("text", "video", "audio")  # pretrain.py order T, V, A (and the model's column order)

# OverallModal.preprocess_model: requires_grad=False for names containing 'adapter' or 'decoder'.
FROZEN = (r"^(text|video|audio)_encoder/adapter_\d+/", r"^(text|video|audio)_decoder/")


KNOWLEDGE_HELP = ("KuDA's stage 1 (pretrain.py) learns unimodal sentiment on CH-SIMSv2(s) (unimodal labels), "
                  "with the text translated to English for MOSI/MOSEI (KuDA README). Put that release in the "
                  "MMSA layout there: the CH-SIMSv2 pickle (Processed/sims_unaligned.pkl; audio 25 / vision 177 "
                  "features, regression_labels_T/A/V) with raw_text in English and text_bert re-tokenised for "
                  "the target's BERT (bert-base-uncased); or point --config.stage1.dataset.root at it; or set "
                  "--config.stage1.dataset.root='' --config.stage1.target=multimodal to pretrain on the target")


def knowledge_dataset(config, *, check: bool = True):
    """``config.stage1.dataset`` if stage 1 trains on a knowledge dataset (not the target), else None.

    A real (non-synthetic) one must exist: checked (``check``) when a stage-1 config is made, i.e. when
    training plans its stages, before any training; evaluation configures the final stage only and
    never needs it."""
    ds = config.stage1.get("dataset")
    if not ds or not ds.get("root"):
        return None
    if check and not len(ds.get("synthetic", {})) and not os.path.exists(ds.root):
        raise DataError(ds.root, "config.stage1.dataset", "the knowledge dataset of KuDA's stage 1",
                        "no such file or folder", hint=KNOWLEDGE_HELP)
    return ds


def _stage1_config(config, m: str):
    """pretrain.py for modality ``m``: its encoder + decoder alone, on its unimodal label (or the
    multimodal one, ``stage1.target``), with stage 1's epochs, lr and weight decay, on the knowledge
    dataset ``stage1.dataset`` if one is set (with its sizes and lengths; the whole text branch, BERT
    included, transfers to stage 2, so its text is read with a BERT of the target's shape)."""
    s1, c = config.stage1, copy.deepcopy(config)
    knowledge = knowledge_dataset(config)
    if knowledge is not None:
        c.dataset = copy.deepcopy(knowledge)
        # its text must be tokenised for the BERT stage 2 uses: the target's unless it names one
        # (a synthetic one writes its own random BERT, same vocabulary and sizes as the target's)
        c.dataset.bert_path = knowledge.get("bert_path") or config.dataset.bert_path
        c.model.update({"text_len": c.dataset.max_len.text, "audio_len": c.dataset.max_len.audio,
                        "video_len": c.dataset.max_len.video})
    c.model.update({"stage": 1, "modality": m, "target": s1.target})
    c.num_epochs = c.patience = int(s1.epochs[m])
    c.optimizer.update({"lr": s1.lr, "weight_decay": s1.weight_decay})
    unimodal_metric = f"{c.dataset.metric}_{m}"
    if s1.target == "unimodal" and unimodal_metric in metrics_lib.SCORERS:
        c.metric = unimodal_metric  # score u_m against label_<m>
    return c


def _stage2_config(config):
    c = copy.deepcopy(config)
    c.model.stage = 2
    return c


def stages(config) -> list[registry.Stage]:
    """KuDA's recipe: ``stage1_text``, ``stage1_video``, ``stage1_audio`` (pretrain.py, T, V, A; if
    ``stage1.enabled``), then ``stage2`` (train.py) initialised from them with the adapters and decoders
    frozen (``stage1.freeze``). Stage-1 weights come from the last epoch (``stage1.select='last'``, what
    pretrain.py saves) or the best dev epoch (``'best'``). ``stage1.enabled=False``: stage 2 alone from
    scratch, nothing frozen (the "w/o knowledge injection" ablation). With a knowledge dataset
    (``stage1.dataset``) stage 2 grafts what fits (``warm_start_fit='fitting'``): its feature sizes and
    lengths are the target's, so the audio/video input projections (and position tables, if the
    lengths differ) stay fresh and are reported."""
    s1 = config.stage1
    if s1.target not in ("unimodal", "multimodal"):
        raise ConfigError(f"config.stage1.target={s1.target!r}: expected 'unimodal' or 'multimodal'")
    if s1.select not in ("last", "best"):
        raise ConfigError(f"config.stage1.select={s1.select!r}: expected 'last' or 'best'")
    if not s1.enabled:
        return [registry.Stage("stage2", _stage2_config)]
    first = [registry.Stage(f"stage1_{m}", functools.partial(_stage1_config, m=m), select=s1.select)
             for m in MODALITIES]
    fit = "fitting" if knowledge_dataset(config, check=False) is not None else "strict"
    return first + [registry.Stage("stage2", _stage2_config, warm_start=tuple(s.name for s in first),
                                   frozen=FROZEN if s1.freeze else (), warm_start_fit=fit)]
