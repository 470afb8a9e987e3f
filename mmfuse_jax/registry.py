"""Name -> model. A model file in `models/` builds a `ModelSpec` and calls `register`; the spec
owns everything that differs per model, so generic code (training, predictor, report, pipeline)
runs any spec and never names a model.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mmfuse_jax.errors import ConfigError

LossFn = Callable[[dict, dict], tuple[Any, dict]]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage of a model's recipe.

    name: the stage's run folder under the workdir (``""``: the workdir itself, what a one-stage
        model uses). configure(config) -> the stage's config (a copy with the stage's overrides).
    warm_start: names of earlier stages whose params are grafted into this stage's fresh params
        (every top-level subtree a source holds replaces the fresh copy).
    frozen: regexes over '/'-joined param paths that this stage does not update.
    select: which checkpoint of this stage a later stage (or evaluation) reads: ``'best'`` (the
        best dev epoch) or ``'last'`` (the latest checkpoint).
    warm_start_fit: how the warm-start sources must fit this stage's params: ``'strict'`` (every
        source subtree has exactly the target's structure and shapes, else a `ConfigError`) or
        ``'fitting'`` (graft what fits, layer by layer, and print the paths skipped: for a source
        trained on data with other feature sizes, whose input projections cannot load).
    """

    name: str = ""
    configure: Callable[[Any], Any] = lambda config: config
    warm_start: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    select: str = "best"
    warm_start_fit: str = "strict"


WARM_START_FITS = ("strict", "fitting")


def single_stage(config) -> list[Stage]:
    """The recipe of most models: one stage, trained in the workdir itself."""
    del config
    return [Stage()]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    build(config.model, info) -> nn.Module, where ``info`` has ``num_classes`` and ``bert`` (a
    `BertConfig` or None). make_loss(config) -> loss_fn(outputs, batch) -> (scalar loss, dict of
    aux scalars), every reduction weighted by ``batch['valid']``; loss hyperparameters come from
    the config given to make_loss (its ``model``, ``optimizer`` or ``dataset`` sections: the memoised
    train step is keyed on those, `training.loop._program_key`), never through the outputs dict.
    eval_outputs: model outputs the eval step returns beside ``logits``/``prediction``/``embedding``
        (saved in ``predictions_<split>.npz``).
    output_labels: names for the trailing axis of an eval output (e.g. which modality each column of
        a per-sample weight is), used by the predictor and the report.
    result_keys: the key under which the predictor returns an eval output (default: its own name).
    analyses: names of `mmfuse_jax.analysis` analyses the report runs for this model.
    stages(config) -> the training recipe, a list of `Stage`s in training order.
    added_fields: config keys this model gained after run folders existed, with the value that
        reproduces a run saved without them (read by `training.identity`, so older runs still match).
    specialise(model, fixed) -> a module computing the same outputs as ``model`` whenever the params
        that ``fixed`` knows keep the values it gives (``fixed('/'-joined param path)`` -> its host
        array, or None where the param changes: a stage's trained params); programs built from it may
        use those values as constants (e.g. HCT-DMG with a frozen gate runs one branch, not a switch).
        None: the model is used as built. Called by `Experiment.specialised` (training stages with
        frozen params, evaluation, prediction).
    """

    name: str
    build: Callable[[Any, dict], Any]
    make_loss: Callable[[Any], LossFn]
    task: str = "classification"
    uses_bert: bool = True
    eval_outputs: tuple[str, ...] = ()
    output_labels: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    result_keys: dict[str, str] = dataclasses.field(default_factory=dict)
    analyses: tuple[str, ...] = ()
    stages: Callable[[Any], list[Stage]] = single_stage
    added_fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    specialise: Callable[[Any, Callable[[str], Any]], Any] | None = None


def fixed_loss(loss_fn: LossFn) -> Callable[[Any], LossFn]:
    """``make_loss`` for a loss with no hyperparameters."""
    return lambda config: loss_fn


_MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    _MODELS[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    _load_models()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}: expected one of {sorted(_MODELS)}")
    return _MODELS[name]


def names() -> list[str]:
    _load_models()
    return sorted(_MODELS)


def _load_models() -> None:
    # The registry sits below models/ (models import it to register): importing the package that
    # registers them happens on first lookup, by module name, so no import edge points upwards.
    import importlib

    importlib.import_module("mmfuse_jax.models")
