"""KuDA: per-example modality attention weights, their distribution over the test set and the examples
where audio or video dominates.

The weights: KuDA's dynamic modality attention as `models/kuda.py` reads the paper (``ratio_mode=
'attention'``): the fusion blocks weight modality m by r_m = softmax_m(-k (u_m - y)^2) (u_m: the unimodal
decoders' predictions; y: the label in training, the unimodal consensus mean_m u_m at evaluation,
``ratio_inference='dynamic'``). The released code's ratio is a no-op at evaluation and exposes no weights,
so this run switches the reading on; the eval step saves r [N, 3] in ``predictions_test.npz``.

Per modality, over the test set of every seed: the mean weight, its spread across examples, the share of
examples it dominates (argmax r), the MAE of those examples. On the synthetic MMSA layout the generator
records which modality carries each label (``dominant`` in the pickle: that modality holds y exactly and
loudly, the others a noisy copy), so the table adds: the weight a modality gets on the examples it carries
minus on the others, and how often argmax r finds it (chance: 1/3). ``top_examples.md``: the examples of
the first seed where audio / video have the largest weight among those they dominate.
"""
from __future__ import annotations

import os

import numpy as np

from mmfuse_jax.experiments import Experiment, Run, Table, register
from mmfuse_jax.experiments.common import mean_std_cell, split_keys

SHOWN = ("text", "audio", "video")
TOP = 5


def runs(preset):
    overrides = {"model.ratio_mode": "attention", "model.ratio_inference": "dynamic"}
    if preset == "tiny":
        overrides["stage1.enabled"] = False  # tests: the weights need the fusion, not stage 1 (3 more runs)
    return [Run("attention", "kuda", overrides)]


def generator_dominant(config, keys: list[str], split: str = "test") -> np.ndarray | None:
    """The modality (index into `SHOWN`) the synthetic MMSA generator made carry each example's label, in
    the order of ``keys``; None for data without that record (real releases)."""
    if config.dataset.get("format") != "mmsa" or not len(config.dataset.get("synthetic", {})):
        return None
    from mmfuse_jax.data.formats.mmsa import SPLITS, find_pickle
    from mmfuse_jax.data.safe_pickle import load_pickle

    name = {ours: theirs for theirs, ours in SPLITS.items()}[split]
    data = load_pickle(find_pickle(config.dataset.root))[name]
    if "dominant" not in data:
        return None
    by_id = dict(zip(map(str, data["id"]), np.asarray(data["dominant"], np.int64)))  # 0 text, 1 audio, 2 video
    return np.asarray([by_id[k] for k in keys], np.int64)


def weight_stats(r_nm: np.ndarray, err_n: np.ndarray, dominant_n: np.ndarray | None) -> dict[str, dict]:
    """Per modality (columns of ``r_nm`` in `SHOWN` order): mean weight, std across examples, dominant
    share, MAE when dominant; with ``dominant_n``: weight on the examples it carries minus on the others
    ('lift') and the share of those examples whose argmax is it ('found')."""
    r = np.asarray(r_nm, np.float64)
    top = r.argmax(1)
    out = {}
    for i, m in enumerate(SHOWN):
        won = top == i
        row = {"mean": float(r[:, i].mean()), "spread": float(r[:, i].std()), "share": float(won.mean()),
               "mae_dominant": float(np.abs(err_n[won]).mean()) if won.any() else float("nan")}
        if dominant_n is not None:
            carries = dominant_n == i
            row["lift"] = float(r[carries, i].mean() - r[~carries, i].mean()) if carries.any() and (~carries).any() \
                else float("nan")
            row["found"] = float((top[carries] == i).mean()) if carries.any() else float("nan")
        out[m] = row
    return out


def top_examples(r_nm: np.ndarray, keys: list[str], modality: str, k: int = TOP) -> list[int]:
    """Rows of the (at most ``k``) examples ``modality`` dominates, largest weight first."""
    i = SHOWN.index(modality)
    r = np.asarray(r_nm, np.float64)
    rows = np.flatnonzero(r.argmax(1) == i)
    return [int(j) for j in rows[np.argsort(-r[rows, i], kind="stable")][:k]]


def seed_weights(config, run_dir: str) -> dict:
    """The run's test predictions with r in `SHOWN` order, the example ids and the generator's record."""
    from mmfuse_jax import runfiles
    from mmfuse_jax.analysis.common import output_labels

    pred = runfiles.require_predictions(run_dir, "test", "ratio", "per-example modality weights [N, 3] (KuDA "
                                        "with model.ratio_mode 'attention' or 'paper')")
    names = output_labels(config.to_dict(), "ratio", pred["ratio"].shape[-1])
    r = np.asarray(pred["ratio"], np.float64)[:, [names.index(m) for m in SHOWN]]
    keys = split_keys(config)
    if len(keys) != len(r):
        raise ValueError(f"{run_dir}: {len(r)} predictions for {len(keys)} test examples")
    uni = np.asarray(pred["unimodal_prediction"], np.float64)[:, [names.index(m) for m in SHOWN]]
    return {"r": r, "keys": keys, "label": np.asarray(pred["label"], np.float64),
            "prediction": np.asarray(pred["prediction"], np.float64), "unimodal": uni,
            "dominant": generator_dominant(config, keys)}


def table(results):
    r = results["attention"]
    seeds = {s: seed_weights(r.seed_configs[s], d) for s, d in r.seed_runs.items()}
    stats = {s: weight_stats(w["r"], w["prediction"] - w["label"], w["dominant"]) for s, w in seeds.items()}
    synthetic = all(w["dominant"] is not None for w in seeds.values())
    cols = [("mean", 1, 4), ("spread", 1, 4), ("share", 100, 1), ("mae_dominant", 1, 3)] + \
        ([("lift", 1, 4), ("found", 100, 1)] if synthetic else [])
    rows = [[m, *(mean_std_cell(_finite([st[m][k] for st in stats.values()]), sc, dg) for k, sc, dg in cols)]
            for m in SHOWN]
    header = ["modality", "mean weight", "spread across examples", "dominant in (%)", "MAE when dominant"] + \
        (["weight lift where it carries the label", "found by argmax (%)"] if synthetic else [])
    t = Table(header, rows, data={"stats": {str(s): v for s, v in stats.items()}})
    t.plot = {"labels": list(SHOWN), "means": [100 * np.mean([st[m]["share"] for st in stats.values()]) for m in SHOWN],
              "stds": [100 * np.std([st[m]["share"] for st in stats.values()], ddof=1) if len(stats) > 1 else None
                       for m in SHOWN], "ylabel": "test examples it dominates (argmax weight, %)"}
    t.notes = _notes(seeds, stats, synthetic)
    if seeds and results.out:
        first = min(seeds)
        t.data["top_examples"] = _write_top(seeds[first], first, results.out)
        t.notes += _plots(seeds[first], first, r.seed_configs[first], results.out)
    return t


def _finite(values: list[float]) -> list[float]:
    """The seeds where the value exists (e.g. the MAE of a modality that dominated no example is nan)."""
    return [v for v in values if not np.isnan(v)]


def _notes(seeds: dict, stats: dict, synthetic: bool) -> list[str]:
    lo = min(float(w["r"].min()) for w in seeds.values())
    hi = max(float(w["r"].max()) for w in seeds.values())
    notes = ["weights r_m: KuDA with model.ratio_mode='attention', ratio_inference='dynamic' (module docstring); "
             f"per seed over the test set, then mean ± std over seeds; every weight lies in [{lo:.3f}, {hi:.3f}] "
             "(uniform = 0.333)"]
    if synthetic:
        agree = [np.mean(w["r"].argmax(1) == w["dominant"]) for w in seeds.values()]
        notes.append(f"argmax weight = the modality the generator made carry the label: "
                     f"{mean_std_cell(agree, 100, 1)} % of test examples (chance 33.3 %); lift > 0: the weights "
                     "favour the modality that carries the label")
    return notes


def _write_top(w: dict, seed: int, out: str) -> dict[str, list[dict]]:
    lines = [f"# Test examples where audio or video dominates (seed {seed}, largest weight first)", "",
             "| dominant | id | w text | w audio | w video | label | prediction | u text | u audio | u video |"
             + (" carries the label |" if w["dominant"] is not None else ""),
             "|---|---|" + "---:|" * 8 + ("---|" if w["dominant"] is not None else "")]
    found: dict[str, list[dict]] = {}
    for m in ("audio", "video"):
        for j in top_examples(w["r"], w["keys"], m):
            row = {"id": w["keys"][j], "weights": dict(zip(SHOWN, w["r"][j].round(4).tolist())),
                   "label": float(w["label"][j]), "prediction": float(w["prediction"][j]),
                   "unimodal": dict(zip(SHOWN, w["unimodal"][j].round(4).tolist()))}
            cells = [m, row["id"], *(f"{v:.4f}" for v in w["r"][j]), f"{row['label'] + 0.0:.2f}",
                     f"{row['prediction']:.3f}", *(f"{v:.3f}" for v in w["unimodal"][j])]
            if w["dominant"] is not None:
                row["carries_label"] = SHOWN[int(w["dominant"][j])]
                cells.append(row["carries_label"])
            lines.append("| " + " | ".join(cells) + " |")
            found.setdefault(m, []).append(row)
    with open(os.path.join(out, "top_examples.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return found


def _plots(w: dict, seed: int, config, out: str) -> list[str]:
    from mmfuse_jax import plots
    from mmfuse_jax.analysis.ratios import plot_ratios

    path = plot_ratios(w["r"], SHOWN, os.path.join(out, "weights_per_example.png"),
                       f"KuDA modality weights, test, seed {seed}", w["label"], w["prediction"])
    fig = plots.figure(6, 3.6)
    ax = fig.add_subplot()
    for i, m in enumerate(SHOWN):
        ax.hist(w["r"][:, i], bins=30, alpha=0.55, label=m)
    ax.set_xlabel("weight r_m")
    ax.set_ylabel("test examples")
    ax.legend(fontsize=8)
    ax.set_title(f"distribution of the modality weights (seed {seed})", fontsize=9)
    hist = plots.save(fig, os.path.join(out, "weights_hist.png"))
    return [f"per example (stacked, sorted by dominant modality): ![weights]({os.path.relpath(path, out)}); "
            f"distribution: ![hist]({os.path.relpath(hist, out)}); the top audio/video examples: "
            "[top_examples.md](top_examples.md)"]


register(Experiment("kuda_attention_viz", "KuDA per-example modality attention weights: their distribution, the "
                    "examples audio or video dominates, and (synthetic) whether they follow the modality that "
                    "carries the label", runs, table, presets=("demo", "tiny", "sims", "simsv2", "mosi", "mosei")))
