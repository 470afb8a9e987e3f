"""Every dataset preset, in one table: ``DATASETS[name]`` holds what differs from ``DEFAULTS``.

`dataset(name)` returns the ``config.dataset`` ConfigDict (defaults + the entry, a fresh copy);
`register_dataset` adds an entry (a test-local config file adds a toy dataset with it). Readers
(`mmfuse_jax.data.formats`) know only their files; which folder, which feature sizes and lengths,
which metric and which synthetic generator a dataset uses is decided here.

Fields: ``format`` (a `formats.FORMATS` name), ``name``, ``root``, ``bert_path``, ``feat_dims``,
``max_len`` (text/audio/video), ``task``, ``metric`` (a `metrics.SCORERS` entry), ``nonfinite``,
``num_buckets``, ``prepared_dir``, ``synthetic`` (empty for a real release; else the generator and
its spec, written on first use by `mmfuse_jax.data.ensure_dataset`), and per format
``read_options`` (keyword arguments of its ``read``), ``label_shape``, ``oos_label``, ``doc_scale``.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import ml_collections

from mmfuse_jax.data import synthetic
from mmfuse_jax.data.formats import mintrec2, mult, mustard
from mmfuse_jax.data.synthetic import mintrec2 as synthetic_mintrec2
from mmfuse_jax.data.synthetic import mmsa as synthetic_mmsa
from mmfuse_jax.data.synthetic import mult as synthetic_mult
from mmfuse_jax.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "task": "classification",    # or 'regression' (float labels)
    "metric": "classification",  # a metrics.SCORERS entry: the benchmark's official metrics
    "num_buckets": 4,            # <= 4 compiled shapes per step function (foundation issue)
    "buckets": "fixed",          # or 'auto': train-histogram lengths, batches by bucket (ours, data/buckets.py)
    "nonfinite": "error",        # or 'zero': replace NaN/inf by 0 and report the count
    "prepared_dir": "",          # default: <root>/prepared
    "synthetic": {},             # empty: a real release (nothing to generate)
    "bert_path": "",
}


def _synthetic_intent(generator: str, name: str, spec) -> dict:
    """A synthetic MIntRec / MIntRec2.0-layout benchmark under ``data/<name>`` with its random BERT."""
    return {"name": name, "root": f"data/{name}", "bert_path": f"data/{name}/bert",
            "synthetic": synthetic.config_fields(generator, spec),
            "feat_dims": {"audio": spec.audio_dim, "video": spec.video_dim},
            "max_len": {"text": 16, "audio": spec.audio_len[1], "video": spec.video_len[1]}}


def _mintrec(name: str, spec=None) -> dict:
    if spec is not None:
        return {"format": "mintrec", **_synthetic_intent("mintrec", name, spec)}
    return {"format": "mintrec", "name": "mintrec", "root": "data/MIntRec",
            # thuiar/MIntRec uses bert-base-uncased.
            "bert_path": "pretrained/bert-base-uncased",
            # thuiar/MIntRec data/__init__.py: feat_dims and max_seq_lengths.
            "feat_dims": {"audio": 768, "video": 256}, "max_len": {"text": 30, "audio": 480, "video": 230}}


def _mintrec2(name: str, spec=None) -> dict:
    ds = {"format": "mintrec2",
          "metric": "mintrec2",          # in-scope classification (OOS rows ignored), metrics.SCORERS
          "read_options": {"oos_splits": ("test",)},
          "oos_label": mintrec2.OOS_LABEL,
          "doc_scale": 1.0}              # configs/single_turn/{text,mag_bert,mult}_ood.py: 'scale': [1]
    if spec is not None:
        return {**ds, **_synthetic_intent("mintrec2", name, spec)}
    return {**ds, "name": "mintrec2", "root": "data/MIntRec2.0",
            # examples/single_turn/run_*_ood_baselines.sh: --text_backbone bert-large-uncased.
            "bert_path": "pretrained/bert-large-uncased",
            # data/single_turn/__init__.py: feat_dims and max_seq_lengths for swin-roi / wavlm.
            "feat_dims": {"audio": 768, "video": 256}, "max_len": {"text": 50, "audio": 400, "video": 180}}


# MMSA pickles: (folder, BERT, (audio dim, video dim), (text, audio, video) lengths), sources:
#   dims and splits: REFERENCE_NOTES.md (thuiar/MMSA config_regression.json and the released pickles);
#   MOSI lengths: unaligned_50.pkl (audio 375 x 5, vision 500 x 20); MOSEI: 500 frames each;
#   SIMS: unaligned_39.pkl (audio 400 x 33, vision 55 x 709; KuDA opts.py seq_lens 39/55/400);
#   SIMSv2: KuDA pretrain.py seq_lens [50, 232, 925], fea_dims [768, 177, 25] (T, V, A);
#   BERT: KuDA models/OverallModal.py build_model (bert-base-chinese for SIMS*, -uncased otherwise).
_MMSA = {
    "mosi": ("data/MMSA/MOSI", "bert-base-uncased", (5, 20), (50, 375, 500)),
    "mosei": ("data/MMSA/MOSEI", "bert-base-uncased", (74, 35), (50, 500, 500)),
    "sims": ("data/MMSA/SIMS", "bert-base-chinese", (33, 709), (39, 400, 55)),
    "simsv2": ("data/MMSA/SIMSv2", "bert-base-chinese", (25, 177), (50, 925, 232)),
}


def _mmsa(name: str) -> dict:
    """One MMSA benchmark (regression, its official metrics)."""
    root, bert, (audio_dim, video_dim), (lt, la, lv) = _MMSA[name]
    return {"format": "mmsa", "name": name, "root": root, "bert_path": f"pretrained/{bert}",
            "feat_dims": {"audio": audio_dim, "video": video_dim}, "max_len": {"text": lt, "audio": la, "video": lv},
            "task": "regression", "metric": name,
            "read_options": {"tokenize_raw_text": False},  # True: raw_text through bert_path's tokenizer (mmsa.py)
            "nonfinite": "zero"}  # MMSA data_loader.py: audio[audio == -inf] = 0 (KuDA: vision too)


def _synthetic_mmsa(name: str, spec) -> dict:
    """A synthetic MMSA-layout benchmark under ``data/<name>`` (SIMS metrics)."""
    return {"format": "mmsa", "name": name, "root": f"data/{name}", "bert_path": f"data/{name}/bert",
            "feat_dims": {"audio": spec.audio_dim, "video": spec.video_dim},
            "max_len": {"text": spec.text_len, "audio": spec.audio_len[1], "video": spec.video_len[1]},
            "task": "regression", "metric": "sims", "nonfinite": "zero", "num_buckets": 1,
            "read_options": {"tokenize_raw_text": False},  # True: raw_text through bert_path's tokenizer (mmsa.py)
            "synthetic": synthetic.config_fields("mmsa", spec)}


def _synthetic_mmsa_roberta(name: str, spec) -> dict:
    """The same synthetic MMSA data (the same pickle) under its own root with a random RoBERTa of the BERT's
    sizes in ``bert/`` (ours; the kuda_text_encoders experiment): raw_text is tokenised with its BPE."""
    spec = dataclasses.replace(spec, text_encoder="roberta")
    return {**_synthetic_mmsa(name, spec), "read_options": {"tokenize_raw_text": True}}


# MulT pickles. Sequence lengths of the released pickles (MulT paper Sec. 4.1 / the files): unaligned
# (Lt, La, Lv), aligned: every modality at the text length. Feature sizes: (text, audio, video).
_MULT_DIMS = {"mosi": (300, 5, 20), "mosei": (300, 74, 35), "iemocap": (300, 74, 35)}
_MULT_LENS = {"mosi": (50, 375, 500), "mosei": (50, 500, 500), "iemocap": (20, 400, 500)}


def _mult(name: str) -> dict:
    """'mosi', 'mosei', 'iemocap' (unaligned) or '<name>_aligned'."""
    base, aligned = name.removesuffix("_aligned"), name.endswith("_aligned")
    dt, da, dv = _MULT_DIMS[base]
    lt, la, lv = (_MULT_LENS[base][0],) * 3 if aligned else _MULT_LENS[base]
    regression = base != "iemocap"
    return {"format": "mult", "name": name, "root": "data/MulT", "bert_path": "",
            "read_options": {"name": base, "aligned": aligned},
            "feat_dims": {"text": dt, "audio": da, "video": dv}, "max_len": {"text": lt, "audio": la, "video": lv},
            "task": "regression" if regression else "classification",
            "metric": base,                            # metrics.SCORERS: 'mosi', 'mosei', 'iemocap'
            "label_shape": () if regression else (len(mult.LABELS),),
            "nonfinite": "zero",                       # src/dataset.py: audio[audio == -inf] = 0
            "num_buckets": 1}                          # the pickles are padded to one length already


def _synthetic_iemocap(name: str, spec) -> dict:
    """A synthetic IEMOCAP in the MulT pickle layout under ``data/<name>`` (IEMOCAP metrics, four emotions),
    with a random BERT (``bert/``) for the BERT models that read its word vectors."""
    return {**_mult("iemocap"), "name": name, "root": f"data/{name}", "bert_path": f"data/{name}/bert",
            "feat_dims": {"text": spec.text_dim, "audio": spec.audio_dim, "video": spec.video_dim},
            "max_len": {"text": spec.text_len, "audio": spec.audio_len, "video": spec.video_len},
            "synthetic": synthetic.config_fields("mult_iemocap", spec)}


# Synthetic MulT-layout IEMOCAP sizes (ours): minutes (demo) or seconds (tiny) on 2 CPU cores.
IEMOCAP_DEMO = synthetic_mult.SyntheticMulTSpec(train=400, dev=100, test=100, text_dim=32, audio_dim=12,
                                                video_dim=10)
IEMOCAP_TINY = synthetic_mult.SyntheticMulTSpec(train=64, dev=32, test=32, text_len=8, audio_len=12, video_len=10,
                                                text_dim=16, audio_dim=6, video_dim=5, bert_hidden=16,
                                                bert_dropout=0.0)

_URFUNNY_LEN = 6 * 20  # 5 context sentences + the punchline, 20 words each (humor_dataloader.ipynb)
_URFUNNY = {  # UR-FUNNY v2: binary humour, GloVe 300 / COVAREP 81 / OpenFace2 371
    "format": "urfunny", "name": "urfunny", "root": "data/UR-FUNNY",
    "read_options": {"context_sentences": 5, "max_sentence_words": 20},
    "feat_dims": {"text": 300, "audio": 81, "video": 371},  # README: glove 300, covarep 81, openface 371
    "max_len": {"text": _URFUNNY_LEN, "audio": _URFUNNY_LEN, "video": _URFUNNY_LEN},
    "metric": "binary",
    "nonfinite": "zero"}   # COVAREP holds NaN/-inf (the tutorial does not clean them: our choice)
_MUSTARD = {  # MUStARD (fold 1, speaker dependent): BERT 768 / librosa 283 / ResNet 2048
    "format": "mustard", "name": "mustard", "root": "data/MUStARD/data",
    "read_options": {"split": "fold1", "text": "bert_tokens", "dev_every": 10},
    "feat_dims": {"text": 768, "audio": mustard.AUDIO_ROWS, "video": 2048},
    # BERT features were extracted with --max_seq_length=128 (README); ~11 audio bins; video frames
    # are at most a few hundred (our bound; longer clips are cut and counted in the report).
    "max_len": {"text": 128, "audio": 16, "video": 256},
    "metric": "binary"}

# Synthetic MMSA sizes (ours): sizes that train in minutes (demo) or seconds (tiny) on 2 CPU cores.
MMSA_DEMO = synthetic_mmsa.SyntheticMMSASpec(train=800, dev=200, test=200)
MMSA_TINY = synthetic_mmsa.SyntheticMMSASpec(train=48, dev=24, test=24, text_len=12, audio_len=(6, 16),
                                             video_len=(4, 10), audio_dim=6, video_dim=5, bert_hidden=16,
                                             bert_dropout=0.0)
# KuDA's stage-1 knowledge data for demo/tiny (configs/kuda.py: config.stage1.dataset): the same layout
# and vocabulary, another seed (other samples, other audio/video patterns) and other audio/video
# feature sizes, so their input projections cannot transfer to the target (as SIMSv2 177/25 -> MOSI 20/5).
MMSA_DEMO_KNOWLEDGE = dataclasses.replace(MMSA_DEMO, audio_dim=9, video_dim=7, seed=1)
MMSA_TINY_KNOWLEDGE = dataclasses.replace(MMSA_TINY, audio_dim=7, video_dim=4, seed=1)
# bench: SIMS shapes (text 39, audio 400 x 33, video 55 x 709) and a MiniLM-shaped BERT
# (6 layers, 384 hidden, 12 heads, FFN 1536), as the performance issue specifies.
MMSA_BENCH = synthetic_mmsa.SyntheticMMSASpec(train=256, dev=32, test=32, text_len=39, audio_len=(200, 400),
                                              video_len=(30, 55), audio_dim=33, video_dim=709, bert_hidden=384,
                                              bert_layers=6, bert_heads=12, bert_intermediate=1536)

DATASETS: dict[str, dict[str, Any]] = {
    # The synthetic MIntRec-layout benchmark (`data/synthetic/mintrec.py`): demo, and a smaller copy for tests.
    "synthetic_demo": _mintrec("synthetic_demo", synthetic.SyntheticSpec()),
    "synthetic_tiny": _mintrec("synthetic_tiny", synthetic.SyntheticSpec(train=320, dev=96, test=96)),
    "mintrec": _mintrec("mintrec"),
    # The synthetic MIntRec2.0 layout with OOS intents (`data/synthetic/mintrec2.py`).
    "synthetic_mintrec2_demo": _mintrec2("synthetic_mintrec2_demo", synthetic_mintrec2.Mintrec2Spec()),
    "synthetic_mintrec2_tiny": _mintrec2("synthetic_mintrec2_tiny", synthetic_mintrec2.TINY),
    "mintrec2": _mintrec2("mintrec2"),
    # MMSA pickles (KuDA) and the synthetic MMSA layout (`data/synthetic/mmsa.py`).
    **{f"mmsa_{n}" if n in _MULT_DIMS else n: _mmsa(n) for n in _MMSA},
    "synthetic_mmsa_demo": _synthetic_mmsa("synthetic_mmsa_demo", MMSA_DEMO),
    "synthetic_mmsa_tiny": _synthetic_mmsa("synthetic_mmsa_tiny", MMSA_TINY),
    "synthetic_mmsa_bench": _synthetic_mmsa("synthetic_mmsa_bench", MMSA_BENCH),
    "synthetic_mmsa_demo_knowledge": _synthetic_mmsa("synthetic_mmsa_demo_knowledge", MMSA_DEMO_KNOWLEDGE),
    "synthetic_mmsa_tiny_knowledge": _synthetic_mmsa("synthetic_mmsa_tiny_knowledge", MMSA_TINY_KNOWLEDGE),
    # The same four with a random RoBERTa instead of the BERT (configs/kuda.py's *_roberta presets).
    **{f"{n}_roberta": _synthetic_mmsa_roberta(f"{n}_roberta", spec) for n, spec in (
        ("synthetic_mmsa_demo", MMSA_DEMO), ("synthetic_mmsa_tiny", MMSA_TINY),
        ("synthetic_mmsa_demo_knowledge", MMSA_DEMO_KNOWLEDGE),
        ("synthetic_mmsa_tiny_knowledge", MMSA_TINY_KNOWLEDGE))},
    # KuDA's stage-1 knowledge for English targets (MOSI, MOSEI): CH-SIMSv2(s) in the MMSA layout with
    # its text translated to English (KuDA README) and tokenised for bert-base-uncased into text_bert.
    # Not released in that form: the user builds it (configs/kuda.py says how).
    # bert_path '': the target's BERT (configs/kuda.py), which stage 2 continues from.
    "simsv2_en": {**_mmsa("simsv2"), "name": "simsv2_en", "root": "data/CH-SIMSv2-en", "bert_path": ""},
    # MulT pickles (MulT, HCT-DMG): unaligned and word-aligned.
    **{f"mult_{n}{s}": _mult(n + s) for n in _MULT_DIMS for s in ("", "_aligned")},
    "synthetic_iemocap_demo": _synthetic_iemocap("synthetic_iemocap_demo", IEMOCAP_DEMO),
    "synthetic_iemocap_tiny": _synthetic_iemocap("synthetic_iemocap_tiny", IEMOCAP_TINY),
    "urfunny": _URFUNNY,
    "mustard": _MUSTARD,
}


def register_dataset(name: str, fields: dict[str, Any], *, replace: bool = False) -> None:
    """Add ``DATASETS[name]`` (what differs from `DEFAULTS`; ``format`` and ``root`` at least)."""
    if name in DATASETS and not replace:
        raise ConfigError(f"dataset preset {name!r} is already registered")
    missing = {"format", "root", "feat_dims", "max_len"} - set(fields)
    if missing:
        raise ConfigError(f"dataset preset {name!r}: missing fields {sorted(missing)}")
    DATASETS[name] = {"name": name, **fields}


def dataset(name: str) -> ml_collections.ConfigDict:
    """``config.dataset`` for the preset ``name``: `DEFAULTS` updated by its entry (a fresh copy)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset preset {name!r}: expected one of {sorted(DATASETS)}")
    return ml_collections.ConfigDict(copy.deepcopy({**DEFAULTS, **DATASETS[name]}))
