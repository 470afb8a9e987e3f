"""Run one registered experiment: its runs' configs, one seed sweep per run, then its table.

    OUT/runs/<run>/seed_<k>/...     ordinary run folders (resumable; finished seeds are reused)
    OUT/runs/<run>/aggregate.*      mean ± std over the seeds (clean and perturbed evaluations)
    OUT/data/<dataset>__<knobs>/    synthetic data written with an experiment's knobs
    OUT/results.md, results.json    the experiment's table, notes and the command that made them
    OUT/results.png                 its plot, when it declares one

With ``store=STORE`` (``--store``), a run is trained once per distinct config for every experiment
that shares the store: ``STORE/<model>__<config hash>/seed_<k>``, linked from ``OUT/runs/<run>``
(a relative symlink); synthetic data with knobs go to ``STORE/data``. Two experiments reaching
the same entry at once take turns (a blocking lock on ``STORE/<entry>.lock``). A real folder
already at ``OUT/runs/<run>`` (from a run without a store) is used as it is.
"""
from __future__ import annotations

import ast
import fcntl
import importlib
import json
import os
import sys
import time
from typing import Any

import numpy as np

from mmfuse_jax import aggregate, sweep
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.experiments import Experiment, Results, Run, RunResult, Table
from mmfuse_jax.training import identity
from mmfuse_jax.training import stages as stages_lib


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``['num_epochs=1', 'model.x=True']`` -> ``{'num_epochs': 1, 'model.x': True}`` (Python literals,
    else strings)."""
    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set={item!r}: expected <config field>=<value>, e.g. num_epochs=1")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def set_field(config, dotted: str, value: Any, where: str) -> None:
    target, *path = [config, *dotted.split(".")]
    *parents, leaf = path
    for p in parents:
        if p not in target:
            raise ConfigError(f"{where}: config field {dotted!r} does not exist ({p!r} is not in its parent)")
        target = target[p]
    if leaf not in target:
        raise ConfigError(f"{where}: config field {dotted!r} does not exist")
    target[leaf] = tuple(value) if isinstance(value, list) else value


def knob_slug(knobs: dict[str, float]) -> str:
    return "+".join(f"{k}-{v:g}" for k, v in sorted(knobs.items()))


def build_config(run: Run, preset: str, out: str, sets: dict[str, Any], data: str | None = None):
    """The run's config: ``configs/<model>.py`` at its preset, its overrides (``{out}`` in a string: ``out``,
    the experiment's folder, whose ``runs/<name>`` names every run, stored or not), its data knobs (data
    under ``data`` or ``out``, ``/data/<dataset>__<knobs>``), then ``sets``."""
    mod = importlib.import_module(f"configs.{run.model}")
    c = mod.get_config(run.preset(preset))
    where = f"run {run.name!r}"
    for k, v in run.overrides.items():  # '{out}' in a string: this experiment's output folder
        set_field(c, k, v.replace("{out}", out) if isinstance(v, str) else v, where)
    if run.synthetic:
        if not len(c.dataset.get("synthetic", {})):
            raise ConfigError(f"{where}: data knobs {dict(run.synthetic)} need a synthetic preset (demo, tiny), "
                              f"not {run.preset(preset)!r}")
        for k, v in run.synthetic.items():
            set_field(c, f"dataset.synthetic.{k}", v, where)
        c.dataset.root = os.path.join(data or out, "data", f"{c.dataset.name}__{knob_slug(dict(run.synthetic))}")
        c.dataset.bert_path = os.path.join(c.dataset.root, "bert")
    for k, v in sets.items():
        set_field(c, k, v, "--set")
    return c


def config_key(config) -> str:
    """``<model>__<12 hex>``: the store entry of a config (`identity.stable_fingerprint`: all its fields,
    resumable ones too, except later-added fields at their old behaviour, so entries outlive new fields)."""
    return f"{config.model_name}__{identity.stable_fingerprint(config)}"


def run_folder(run: Run, config, out: str, store: str | None) -> str:
    """Where ``run`` trains: ``OUT/runs/<name>``, or with a store its entry, linked from there."""
    link = os.path.join(out, "runs", run.name)
    if not store or (os.path.isdir(link) and not os.path.islink(link)):
        return link
    entry = os.path.join(store, config_key(config))
    os.makedirs(entry, exist_ok=True)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    target = os.path.relpath(entry, os.path.dirname(link))
    if os.path.islink(link) and os.readlink(link) != target:
        os.remove(link)  # the run's config changed since: the name now means another entry
    if not os.path.islink(link):
        os.symlink(target, link)
    return entry


def sweep_locked(config, run_dir: str, seeds: list[int], perturbations: tuple[str, ...], shared: bool):
    """`sweep.run_seeds`; with a store, under a blocking lock next to the entry (another experiment
    training the same entry finishes first, then its seeds are reused)."""
    if not shared:
        return sweep.run_seeds(config, run_dir, seeds, perturbations)
    with open(run_dir.rstrip(os.sep) + ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {run_dir}: another experiment is training it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return sweep.run_seeds(config, run_dir, seeds, perturbations)


def collect(run: Run, config, run_dir: str, seeds: list[int]) -> RunResult:
    path = os.path.join(run_dir, "aggregate.json")
    agg = json.load(open(path)) if os.path.exists(path) else {"splits": {}, "perturbations": {}}
    seed_runs, seed_configs = {}, {}
    for seed in seeds:
        d = aggregate.seed_dir(run_dir, seed)
        if os.path.isdir(d) and str(seed) not in agg.get("failed", {}):
            last = stages_lib.final(sweep.with_seed(config, seed), d)
            seed_runs[seed], seed_configs[seed] = last.run_dir, last.config
    return RunResult(run, json.loads(config.to_json_best_effort()), agg, seed_runs, seed_configs)


def select_runs(exp: Experiment, runs: list[Run], preset: str, only: list[str] | None) -> list[str]:
    """The names of the runs to train: ``only`` (checked against ``runs``, the experiment's at ``preset``),
    or all of them."""
    names = [r.name for r in runs]
    unknown = [n for n in only or () if n not in names]
    if unknown:
        raise ConfigError(f"--runs: experiment {exp.name!r} has no run {unknown[0]!r} at preset {preset!r}: "
                          f"expected some of {names}")
    return list(only) if only else names


def run_experiment(exp: Experiment, *, preset: str, seeds: list[int], out: str, sets: dict[str, Any] | None = None,
                   argv: list[str] | None = None, store: str | None = None,
                   only: list[str] | None = None) -> tuple[Table, list[str]]:
    """Train/evaluate what is missing, write OUT/results.{md,json}(, .png); returns the table and the
    failures (``'<run> seed <k>: <reason>'``). ``store``: share runs with other experiments (module doc).
    ``only`` (``--runs``): train just these runs; the others are not trained in this invocation, and the
    table shows what they already have (their finished seeds, from an earlier invocation or another
    experiment of the store), else ``–``. Every run's config is still built first (config errors first)."""
    if preset not in exp.presets:
        raise ConfigError(f"experiment {exp.name!r}: unknown preset {preset!r}: expected one of {list(exp.presets)}")
    runs = exp.runs(preset)
    train = select_runs(exp, runs, preset, only)
    configs = {r.name: build_config(r, preset, out, sets or {}, data=store) for r in runs}  # config errors first
    t0, results, failures = time.time(), {}, []
    for r in runs:
        run_dir = run_folder(r, configs[r.name], out, store)
        if r.name in train:
            print(f"\n##### {exp.name}: run {r.name} ({r.model}, preset {r.preset(preset)}) -> {run_dir}",
                  flush=True)
            done = sweep_locked(configs[r.name], run_dir, seeds, tuple(r.perturbations), shared=bool(store))
            failures += [f"{r.name} seed {s.seed}: {s.reason}" for s in done if not s.ok]
        results[r.name] = collect(r, configs[r.name], run_dir, seeds)
    table = exp.table(Results(results, preset, seeds, out))
    write_results(exp, table, out, preset=preset, seeds=seeds, failures=failures,
                  seconds=time.time() - t0, argv=argv, runs=runs,
                  untrained=[r.name for r in runs if r.name not in train])
    return table, failures


def to_markdown(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|---|" + "---:|" * (len(table.header) - 1)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in table.rows]


def write_results(exp: Experiment, table: Table, out: str, *, preset: str, seeds: list[int], failures: list[str],
                  seconds: float, argv: list[str] | None, runs: list[Run], untrained: list[str] = ()) -> None:
    os.makedirs(out, exist_ok=True)
    command = "python -m mmfuse_jax.experiments " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# {exp.name}", "", exp.summary, "", f"Command: `{command}`  ", f"Preset {preset}; seeds {seeds} "
             f"(mean ± sample std, ddof=1); wall time of this invocation {seconds:.0f} s (finished runs reused).", ""]
    lines += to_markdown(table) + [""]
    lines += [f"- {n}" for n in table.notes]
    if untrained:
        lines += ["", "Not trained by this invocation (`--runs`; rows show the seeds they already had): "
                  + ", ".join(untrained)]
    if failures:
        lines += ["", "Failed:"] + [f"- {f}" for f in failures]
    if table.plot:
        lines += ["", f"![{exp.name}](results.png)"]
        _plot(table.plot, os.path.join(out, "results.png"), f"{exp.name} ({preset}, {len(seeds)} seeds)")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    record = {"experiment": exp.name, "preset": preset, "seeds": seeds, "command": command, "seconds": seconds,
              "header": table.header, "rows": table.rows, "notes": table.notes, "failures": failures,
              "untrained": list(untrained),
              "data": table.data, "runs": {r.name: {"model": r.model, "preset": r.preset(preset),
                                                    "overrides": dict(r.overrides), "synthetic": dict(r.synthetic),
                                                    "perturbations": list(r.perturbations)} for r in runs}}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(record, f, indent=2, default=str)


def _plot(plot: dict, path: str, title: str) -> str:
    from mmfuse_jax import plots

    labels = plot["labels"]
    fig = plots.figure(max(5.0, 0.9 * len(labels) + 2), 3.6)
    ax = fig.add_subplot()
    means = np.asarray([np.nan if m is None else m for m in plot["means"]], float)
    stds = np.asarray([0.0 if s is None else s for s in plot.get("stds", [0.0] * len(labels))], float)
    ax.bar(np.arange(len(labels)), means, yerr=stds, capsize=3, color="#4c72b0")
    ax.set_xticks(np.arange(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(plot.get("ylabel", ""))
    ax.set_title(title, fontsize=9)
    return plots.save(fig, path)
