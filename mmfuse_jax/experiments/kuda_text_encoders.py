"""KuDA with RoBERTa instead of BERT for the text branch, everything else the same (the same data,
seeds, sizes and recipe). The text encoder is the checkpoint the dataset's ``bert_path`` names
(encoders/bert.py reads ``model_type`` from it); configs/kuda.py's ``<preset>_roberta`` presets point it
at a RoBERTa and re-tokenise the MMSA ``raw_text`` with its byte-level BPE (read option
``tokenize_raw_text``), for stage 1's knowledge dataset too.

demo/tiny: the synthetic MMSA pickles written again under their own roots (byte-identical) with a random
RoBERTa of the random BERT's sizes (`data.synthetic.mmsa.write_text_encoder`); both encoders are
untrained there, so the rows compare the architectures and tokenizers, not their pretraining. tiny runs
without stage 1 (the test suite's smoke run). mosi/mosei: Hugging Face roberta-base under
configs/kuda.py's ``ROBERTA_PATH`` vs the presets' bert-base-uncased.
"""
import importlib
import json
import os

from mmfuse_jax.errors import DataError
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import REGRESSION, metric_table, metrics_of

ENCODERS = ("bert", "roberta")


def runs(preset):
    roberta = {p: f"{p}_roberta" for p in ("demo", "tiny", "mosi", "mosei")}
    if preset not in ("demo", "tiny"):
        _check_roberta(roberta[preset])
    smoke = {"stage1.enabled": False} if preset == "tiny" else {}
    return [Run("bert", "kuda", smoke), Run("roberta", "kuda", smoke, presets=roberta)]


def _check_roberta(config_preset: str) -> None:
    """A real preset's RoBERTa checkpoint must be there before any training starts."""
    path = importlib.import_module("configs.kuda").get_config(config_preset).dataset.bert_path
    config = os.path.join(path, "config.json")
    hint = ("put the Hugging Face roberta-base checkpoint folder there (config.json, model.safetensors, vocab.json, "
            "merges.txt), or edit configs/kuda.py ROBERTA_PATH")
    if not os.path.isfile(config):
        raise DataError(config, None, f"the RoBERTa checkpoint of preset {config_preset}", "no such file", hint=hint)
    with open(config) as f:
        model_type = json.load(f).get("model_type")
    if model_type != "roberta":
        raise DataError(config, "model_type", "'roberta'", repr(model_type), hint=hint)


def table(results):
    t = metric_table(results, metrics_of(results, "bert", REGRESSION), plot_metric="mae")
    bert, roberta = results["bert"].mean("mae"), results["roberta"].mean("mae")
    if None not in (bert, roberta):
        t.notes.append(f"test MAE roberta minus bert: {roberta - bert:+.4f} (negative: RoBERTa helps)")
    t.notes.append("one KuDA recipe, two text encoders: the dataset's checkpoint is a BERT (WordPiece) or a RoBERTa "
                   "(byte-level BPE over raw_text; positions from pad+1, one token type); same data and seeds")
    if results.preset in ("demo", "tiny"):
        t.notes.append("synthetic data: both encoders are random (untrained) and of the same sizes, so this compares "
                       "the architectures and tokenizers only; the pretraining question needs mosi/mosei"
                       + (" (tiny: without stage 1)" if results.preset == "tiny" else ""))
    return t


register(Experiment("kuda_text_encoders", "KuDA with a RoBERTa instead of a BERT text branch (same data, seeds, "
                    "recipe)", runs, table, presets=("demo", "tiny", "mosi", "mosei")))
