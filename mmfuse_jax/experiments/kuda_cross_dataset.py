"""KuDA across datasets: trained on one MMSA-layout dataset, evaluated on another's test split without
fine-tuning (`training.evaluation.evaluate_on`: the trained checkpoint, its lengths and text encoder, the
other dataset's examples and metrics; nothing is written into the run folder).

Synthetic presets (demo, tiny): trained on the preset's synthetic MMSA data (stage 1 as the preset:
demo on its knowledge dataset; tiny without stage 1, for the tests); the other dataset is the same
generator and sizes with the next generator seed: other examples and other audio/video cue patterns
(what features from other extractors would look like), the same vocabulary and sentiment words. The
table also shows the in-domain test with audio and video removed (``drop:audio,drop:video``): if the
other dataset scores like that row, only the text knowledge transferred.

Real presets: mosi -> mosei, mosei -> mosi, sims -> simsv2, simsv2 -> sims. The released features of
every pair differ in size (MOSI audio/video 5/20, MOSEI 74/35, SIMS 33/709, SIMSv2 25/177), and a
model's input layers have the trained sizes, so these are refused with one error before anything is
trained, unless the two datasets' ``feat_dims`` agree (features re-extracted with the same extractors).
"""
from __future__ import annotations

import copy
import os

from mmfuse_jax.aggregate import aggregate_metrics, cell
from mmfuse_jax.experiments import Experiment, Run, Table, register
from mmfuse_jax.experiments.common import REGRESSION, bar_data, metrics_of

REAL = {"mosi": "mmsa_mosei", "mosei": "mmsa_mosi", "sims": "simsv2", "simsv2": "sims"}  # preset -> other dataset
NO_AV = "drop:audio,drop:video"


def runs(preset):
    if preset in REAL:
        _check_real(preset)
    overrides = {"stage1.enabled": False} if preset == "tiny" else {}  # tests: 3 stage-1 runs fewer
    return [Run("kuda", "kuda", overrides, perturbations=(NO_AV,))]


def _check_real(preset: str) -> None:
    """Refuse a real pair whose datasets one model cannot read (before any training)."""
    from configs import datasets, kuda
    from mmfuse_jax.training.evaluation import on_dataset

    on_dataset(kuda.get_config(preset), datasets.dataset(REAL[preset]))


def other_dataset(config, out: str, preset: str):
    """The ``config.dataset`` the run trained with ``config`` is evaluated on (module docstring)."""
    if preset in REAL:
        from configs import datasets

        return datasets.dataset(REAL[preset])
    if not len(config.dataset.get("synthetic", {})):
        raise ValueError(f"kuda_cross_dataset preset {preset!r}: expected a synthetic dataset, got "
                         f"{config.dataset.name!r}")
    ds = copy.deepcopy(config.dataset)
    ds.synthetic.seed = int(ds.synthetic.seed) + 1
    ds.name = f"{config.dataset.name}_seed{ds.synthetic.seed}"
    ds.root = os.path.join(out, "data", ds.name)
    ds.bert_path = os.path.join(ds.root, "bert")
    ds.prepared_dir = ""
    return ds


def table(results):
    from mmfuse_jax.training.evaluation import evaluate_on

    r = results["kuda"]
    metrics = metrics_of(results, "kuda", REGRESSION)
    other, per_seed = None, {}
    for seed, run_dir in r.seed_runs.items():
        config = r.seed_configs[seed]
        other = other_dataset(config, results.out or ".", results.preset)
        per_seed[seed] = evaluate_on(config, run_dir, other, ("test",))["test"]
    cross = aggregate_metrics(per_seed)
    trained_on = r.config["dataset"]["name"]
    target = other.name if other is not None else "–"
    rows = [[f"{trained_on} (in domain)", *(r.cell(m) for m in metrics)],
            [f"{trained_on}, audio and video removed", *(r.cell(m, perturbation=NO_AV) for m in metrics)],
            [f"{target} (other dataset, no fine-tuning)", *(cell(m, cross[m]) if m in cross else "–" for m in metrics)]]
    t = Table(["evaluated on (test)", *metrics], rows,
              data={"trained_on": trained_on, "evaluated_on": target, "cross": cross,
                    "per_seed": {str(s): v for s, v in per_seed.items()}})
    head = metrics[0]
    bars = bar_data(results, ["kuda"], head)
    summaries = [r.summary(head, perturbation=NO_AV), cross.get(head)]
    scale = 1.0 if head in ("mae", "corr") else 100.0
    t.plot = {"labels": ["in domain", "no audio/video", "other dataset"],
              "means": bars["means"] + [None if s is None else scale * s["mean"] for s in summaries],
              "stds": bars["stds"] + [None if s is None or s["std"] is None else scale * s["std"] for s in summaries],
              "ylabel": bars["ylabel"]}
    t.notes = _notes(r, cross, trained_on, target, results.preset)
    return t


def _notes(r, cross: dict, trained_on: str, target: str, preset: str) -> list[str]:
    notes = [f"KuDA trained on {trained_on} (stage 2's best dev-MAE checkpoint), evaluated on the test split of "
             f"{target} with the same weights, lengths and text encoder (training.evaluation.evaluate_on)"]
    if preset not in REAL:
        notes.append(f"{target}: the same synthetic generator and sizes with the next seed: new examples and new "
                     "audio/video cue patterns, the same vocabulary and sentiment words")
    a, b = r.mean("mae"), cross.get("mae", {}).get("mean")
    if None not in (a, b):
        notes.append(f"test MAE other dataset minus in domain: {b - a:+.4f} (the cost of the dataset shift)")
    return notes


register(Experiment("kuda_cross_dataset", "KuDA trained on one MMSA-layout dataset, evaluated on another without "
                    "fine-tuning (synthetic: the generator's next seed)", runs, table,
                    presets=("demo", "tiny", "mosi", "mosei", "sims", "simsv2")))
