"""Experiments: the papers' open questions, each one command (``python -m mmfuse_jax.experiments NAME``).

An experiment is one module in this package that calls `register` with an `Experiment`:

    from mmfuse_jax.experiments import Experiment, Run, Table, register

    def runs(preset):                      # the runs it needs, for the experiment preset (demo, tiny, real)
        return [Run("static", "dyken_hyena", {"model.dynamic_short_conv": False}),
                Run("dynamic", "dyken_hyena", presets={"demo": "demo_mintrec2"},
                    perturbations=("drop:audio",), synthetic={"incongruity": 0.2})]

    def table(results):                    # `Results` -> `Table` (the runner writes md, json and a plot)
        return Table(["run", "acc"], [[n, results[n].cell("acc")] for n in results.names])

    register(Experiment("my_exp", "one line for --list", runs, table))

The runner (`mmfuse_jax.experiments.runner`) trains every run once per seed under
``OUT/runs/<run name>/seed_<k>`` with the shared sweep (`mmfuse_jax.sweep`: finished seeds are reused,
unfinished ones resume, a failing seed is reported), evaluates it clean and under each perturbation,
and hands the aggregates to ``table``.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

from mmfuse_jax.aggregate import cell
from mmfuse_jax.errors import ConfigError

_NOT_EXPERIMENTS = {"runner", "__main__", "common"}


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained configuration of an experiment.

    name: the run's folder under ``OUT/runs`` and its key in `Results`.
    model: ``configs/<model>.py``. overrides: dotted config fields (``{"model.nce_weight": 0.0}``); ``{out}``
        in a string value is the experiment's output folder (``{"init_from.run": "{out}/runs/a/seed_{seed}"}``).
    presets: experiment preset -> config preset (``{"demo": "demo_mintrec2"}``); absent: the same name.
    synthetic: knobs of the synthetic data (``incongruity``, ``audio_noise``, ``video_noise``); the run's
        data are then written under ``OUT/data/<dataset>__<knobs>`` (synthetic presets only).
    perturbations: `mmfuse_jax.perturb` specs, each one more evaluation of every seed.
    """

    name: str
    model: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    presets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    synthetic: Mapping[str, float] = dataclasses.field(default_factory=dict)
    perturbations: tuple[str, ...] = ()

    def preset(self, experiment_preset: str) -> str:
        return self.presets.get(experiment_preset, experiment_preset)


@dataclasses.dataclass
class RunResult:
    """What one run left: its config (seed 0's, as a dict), the aggregate over seeds
    (`mmfuse_jax.aggregate`, with ``perturbations``) and each seed's evaluated run folder."""

    run: Run
    config: dict
    aggregate: dict
    seed_runs: dict[int, str]
    seed_configs: dict[int, Any] = dataclasses.field(default_factory=dict)  # each seed's final-stage ConfigDict

    def summary(self, metric: str, split: str = "test", perturbation: str = "") -> dict | None:
        """``{"mean", "std", "n", "values"}`` of ``metric`` (``perturbation``: a spec or its slug)."""
        from mmfuse_jax import perturb

        if perturbation:
            slug = perturbation if ":" not in perturbation else perturb.slug(perturbation)
            splits = self.aggregate.get("perturbations", {}).get(slug, {})
        else:
            splits = self.aggregate.get("splits", {})
        return splits.get(split, {}).get(metric)

    def mean(self, metric: str, split: str = "test", perturbation: str = "") -> float | None:
        s = self.summary(metric, split, perturbation)
        return None if s is None else s["mean"]

    def cell(self, metric: str, split: str = "test", perturbation: str = "") -> str:
        """``mean ± std`` as the tables print ``metric`` (``–`` when absent)."""
        s = self.summary(metric, split, perturbation)
        return "–" if s is None else cell(metric, s)


@dataclasses.dataclass
class Results:
    """Every run's `RunResult` by run name (in the experiment's order), the preset and the seeds."""

    runs: dict[str, RunResult]
    preset: str
    seeds: list[int]
    out: str = ""  # the experiment's output folder (for extra plots)

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    def __getitem__(self, name: str) -> RunResult:
        return self.runs[name]


@dataclasses.dataclass
class Table:
    """An experiment's answer: a markdown table, notes (what was measured, in words) and optionally
    one bar plot: ``plot = {"labels": [...], "means": [...], "stds": [...], "ylabel": str}``."""

    header: list[str]
    rows: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)
    plot: dict | None = None
    data: dict = dataclasses.field(default_factory=dict)  # extra numbers for results.json


@dataclasses.dataclass(frozen=True)
class Experiment:
    """name: the CLI name; summary: one line for ``--list``; runs(preset) -> [Run]; table(Results) -> Table;
    presets: the experiment presets it accepts (the first is the default)."""

    name: str
    summary: str
    runs: Callable[[str], list[Run]]
    table: Callable[[Results], Table]
    presets: tuple[str, ...] = ("demo", "tiny")


_EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    if exp.name in _EXPERIMENTS:
        raise ValueError(f"experiment {exp.name!r} registered twice")
    _EXPERIMENTS[exp.name] = exp
    return exp


def _load() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_EXPERIMENTS:
            importlib.import_module(f"{__name__}.{info.name}")


def names() -> list[str]:
    _load()
    return sorted(_EXPERIMENTS)


def get(name: str) -> Experiment:
    _load()
    if name not in _EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}: expected one of {sorted(_EXPERIMENTS)} (--list)")
    return _EXPERIMENTS[name]
