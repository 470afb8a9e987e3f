"""Analyses of trained runs, by name; a model's `registry.ModelSpec.analyses` lists the ones its
run report draws. Every analysis has one signature:

    analysis(run_dir, config, preds, out_dir) -> list[Section]

``config``: the run's resolved config as a dict (``config.json``); ``preds``: {split: the arrays
of ``predictions_<split>.npz``} for the splits to analyse (may be empty: an analysis of the
checkpoints needs none); ``out_dir``: where its PNG files go. An analysis whose inputs are absent
(e.g. no ``ratio`` output in this run) returns []. Each is also a command:
``python -m mmfuse_jax.analysis.<name> --workdir=DIR``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmfuse_jax import registry
from mmfuse_jax.analysis import embeddings, gates, ratios
from mmfuse_jax.analysis.common import Section
from mmfuse_jax.errors import ConfigError

Analysis = Callable[[str, dict, dict[str, dict[str, np.ndarray]], str], list[Section]]

ANALYSES: dict[str, Analysis] = {
    "embeddings": embeddings.analysis,  # PCA of a classifier's embeddings, coloured by class
    "gates": gates.analysis,            # a trainable modality gate across the saved checkpoints
    "ratios": ratios.analysis,          # per-sample modality ratios (which modality dominated)
}


def get(name: str) -> Analysis:
    if name not in ANALYSES:
        raise ConfigError(f"unknown analysis {name!r}: expected one of {sorted(ANALYSES)}")
    return ANALYSES[name]


def for_model(model_name: str) -> list[Analysis]:
    """The analyses the model's spec declares, in its order."""
    return [get(name) for name in registry.get(model_name).analyses]


def run_all(run_dir: str, config: dict, preds: dict[str, dict[str, np.ndarray]], out_dir: str) -> list[Section]:
    """Every analysis of the run's model (``config['model_name']``), their sections in order."""
    return [section for fn in for_model(config["model_name"]) for section in fn(run_dir, config, preds, out_dir)]
