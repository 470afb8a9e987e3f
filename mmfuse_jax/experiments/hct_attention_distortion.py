"""HCT-DMG vs MulT: how far does incongruity move crossmodal attention (the paper's "attention
distortion"), and does HCT-DMG's hierarchy move it less than MulT's all-pairs crossmodal attention?

Data: the preset's synthetic MIntRec-layout benchmark. Its ``incongruity`` knob gives a fixed set of
examples the audio/video cue of the *other* intent of the text's pair (label and text unchanged) and
changes nothing else: the same words, frames, noise and cue window (the knob draws from its own random
stream). So every test example x exists in two versions that differ only in that cue:

    x^c  congruent   (the benchmark written with incongruity 0)
    x^i  incongruent (the benchmark written with incongruity 1)

Both models are trained (one run each, `TRAIN_INCONGRUITY` = 30 % of every split incongruent, as real
data hold both kinds; HCT-DMG with its continuous gate, one stage: the paper's frozen-gate recipe trains
twice and is hct_gate_freeze's question). Then per seed and test example

    D(x) = mean over the model's crossmodal attention maps (every layer: MulT's six target<-source
           transformers, HCT-DMG's four with its primary argmax(gate)) and over their heads and valid
           query positions of  KL( A(x^c) || A(x^i) ),

A(.) being one query's attention distribution over the source positions (`analysis.attention_maps`).
D = 0: the attention ignores whether the cue agrees with the text. It is averaged separately over the
test examples that the training data's test split holds congruent (70 %) and incongruent (30 %): on
the incongruent ones D is the distortion the test data contain, on the congruent ones the distortion
incongruity would cause there (the knob picks the subsets at random: D differs between them only by
sampling noise).
``sharpness`` = the same mean of KL(A(x^c) || uniform over the valid source positions): a model whose
attention is near uniform has a small D for that reason alone. ``acc``: the test accuracy of the
trained run on each subset (incongruent: the cue points at the wrong intent of the pair).
"""
from __future__ import annotations

import copy
import os

import numpy as np

from mmfuse_jax.experiments import Experiment, Run, Table, register
from mmfuse_jax.experiments.common import mean_std_cell, split_keys

TRAIN_INCONGRUITY = 0.3
MODELS = ("mult", "hct_dmg")
SUBSETS = ("congruent", "incongruent")
MODALITIES = ("text", "audio", "video")  # HCT-DMG's order (its primary index)


def runs(preset):
    return [Run("mult", "mult", synthetic={"incongruity": TRAIN_INCONGRUITY}),
            Run("hct_dmg", "hct_dmg", {"gate_freeze.enabled": False}, synthetic={"incongruity": TRAIN_INCONGRUITY})]


def map_modalities(name: str, primary: int | None = None) -> tuple[str, str]:
    """(query modality, key modality) of a crossmodal map named by `attention_maps`: MulT's
    ``<target>_with_<source>/...``, HCT-DMG's ``stage1_a`` (A1 <- A2), ``stage1_b`` (A2 <- A1), ``stage2_a``
    (primary <- Z_1, at A1's positions), ``stage2_b`` (primary <- Z_2), A1, A2 the non-primary modalities."""
    head = name.split("/")[0]
    if "_with_" in head:
        query, key = head.split("_with_")
        return query, key
    if primary is None or head not in ("stage1_a", "stage1_b", "stage2_a", "stage2_b"):
        raise ValueError(f"crossmodal map {name!r}: expected '<target>_with_<source>/...' or an HCT-DMG "
                         "stage1_a/b, stage2_a/b map with its primary")
    a1, a2 = (MODALITIES[m] for m in range(len(MODALITIES)) if m != primary)
    p = MODALITIES[primary]
    return {"stage1_a": (a1, a2), "stage1_b": (a2, a1), "stage2_a": (p, a1), "stage2_b": (p, a2)}[head]


def kl_to_uniform(p_bhts, key_mask_bs, query_mask_bt) -> np.ndarray:
    """Per example [B]: mean over heads and valid queries of KL(p || uniform over the valid keys)
    = log(#valid keys) - H(p)."""
    p = np.asarray(p_bhts, np.float64)
    ent = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1).mean(1)  # [B, T]
    n_keys = np.maximum(np.asarray(key_mask_bs, np.float64).sum(-1), 1.0)[:, None]
    w = np.asarray(query_mask_bt, np.float64)
    return ((np.log(n_keys) - ent) * w).sum(-1) / np.maximum(w.sum(-1), 1.0)


def subset_means(values: np.ndarray, keys: list[str], incongruent: set[str]) -> dict[str, float]:
    """``{'congruent', 'incongruent': mean of values over those keys}`` (nan for an empty subset)."""
    flags = np.asarray([k in incongruent for k in keys], bool)
    v = np.asarray(values, np.float64)
    if v.shape[0] != len(keys):
        raise ValueError(f"{v.shape[0]} values for {len(keys)} example ids")
    return {"congruent": float(v[~flags].mean()) if (~flags).any() else float("nan"),
            "incongruent": float(v[flags].mean()) if flags.any() else float("nan")}


def knob_config(config, incongruity: float, out: str):
    """``config`` reading its synthetic benchmark written with ``incongruity`` (other knobs unchanged)."""
    c = copy.deepcopy(config)
    c.dataset.synthetic.incongruity = incongruity
    knobs = {k: float(v) for k, v in c.dataset.synthetic.items() if k in ("incongruity", "audio_noise", "video_noise")
             and (v or k == "incongruity")}
    slug = "+".join(f"{k}-{v:g}" for k, v in sorted(knobs.items()))
    c.dataset.root = os.path.join(out, "data", f"{config.dataset.name}__{slug}")
    c.dataset.bert_path = os.path.join(c.dataset.root, "bert")
    return c


def distortion(config, run_dir: str, out: str) -> dict[str, np.ndarray | dict | list]:
    """Per test example of the run's best checkpoint: ``keys``, ``kl`` (D), ``sharpness`` and ``per_map``
    ({map: D over that map only}); ``primary``: HCT-DMG's primary modality (None for MulT)."""
    import jax

    from mmfuse_jax.analysis.attention_maps import attention_maps, per_example_kl
    from mmfuse_jax.training.evaluation import restore_best
    from mmfuse_jax.training.experiment import build

    exp_c, exp_i = build(knob_config(config, 0.0, out)), build(knob_config(config, 1.0, out))
    keys = split_keys(exp_c.config)
    if keys != split_keys(exp_i.config):
        raise ValueError(f"{exp_c.config.dataset.root} and {exp_i.config.dataset.root}: the test examples differ")
    params, _ = restore_best(exp_c, run_dir)
    primary = int(np.argmax(np.asarray(params["gate_logits"]))) if "gate_logits" in params else None
    maps_of = jax.jit(lambda b: attention_maps(exp_c.model, params, b))
    per_map: dict[str, list] = {}
    sharp: list = []
    for b_c, b_i in zip(exp_c.loader("test", train=False).epoch(0), exp_i.loader("test", train=False).epoch(0)):
        m_c, m_i = maps_of(b_c), maps_of(b_i)
        keep = b_c["valid"] > 0
        batch_sharp = []
        for name in m_c:
            query, key = map_modalities(name, primary)
            qmask, kmask = b_c[f"{query}_mask"], b_c[f"{key}_mask"]
            per_map.setdefault(name, []).append(np.asarray(per_example_kl(m_c[name], m_i[name], qmask))[keep])
            batch_sharp.append(kl_to_uniform(m_c[name], kmask, qmask)[keep])
        sharp.append(np.mean(batch_sharp, axis=0))
    per_map_n = {k: np.concatenate(v) for k, v in per_map.items()}
    return {"keys": keys, "kl": np.mean(list(per_map_n.values()), axis=0), "sharpness": np.concatenate(sharp),
            "per_map": per_map_n, "primary": None if primary is None else MODALITIES[primary]}


def subset_accuracy(config, run_dir: str, incongruent: set[str]) -> dict[str, float]:
    from mmfuse_jax import runfiles

    pred = runfiles.load_predictions(run_dir, "test")
    correct = (np.asarray(pred["logits"]).argmax(-1) == np.asarray(pred["label"])).astype(np.float64)
    return subset_means(correct, split_keys(config), incongruent)


def _incongruent_test_ids(config) -> set[str]:
    from mmfuse_jax.data.synthetic import META_FILE
    from mmfuse_jax.runfiles import read_json

    return set(read_json(os.path.join(config.dataset.root, META_FILE))["incongruent"]["test"])


def measure(result, out: str) -> dict[int, dict]:
    """Per seed: {'kl'|'sharpness'|'acc': subset means, 'per_map': {map: subset means}, 'primary'}."""
    per_seed = {}
    for seed, run_dir in result.seed_runs.items():
        config = result.seed_configs[seed]
        flipped = _incongruent_test_ids(config)
        d = distortion(config, run_dir, out)
        per_seed[seed] = {"kl": subset_means(d["kl"], d["keys"], flipped),
                          "sharpness": subset_means(d["sharpness"], d["keys"], flipped),
                          "acc": subset_accuracy(config, run_dir, flipped), "primary": d["primary"],
                          "per_map": {k: subset_means(v, d["keys"], flipped) for k, v in d["per_map"].items()},
                          "n": {"incongruent": len(flipped), "congruent": len(d["keys"]) - len(flipped)}}
    return per_seed


def table(results):
    out = results.out or "."
    measured = {name: measure(results[name], out) for name in MODELS if name in results.runs}
    rows, plot = [], {"labels": [], "means": [], "stds": [], "ylabel": "D = KL(A(x^c) ‖ A(x^i)), test"}
    for name, per_seed in measured.items():
        for subset in SUBSETS:
            col = {k: [v[k][subset] for v in per_seed.values()] for k in ("kl", "sharpness", "acc")}
            n = {v["n"][subset] for v in per_seed.values()}
            rows.append([name, subset, mean_std_cell(col["kl"], digits=4), mean_std_cell(col["sharpness"], digits=3),
                         mean_std_cell(col["acc"], 100, 2), "/".join(map(str, sorted(n)))])
            kl = np.asarray(col["kl"])
            plot["labels"].append(f"{name} {subset}")
            plot["means"].append(float(kl.mean()) if len(kl) else None)
            plot["stds"].append(float(kl.std(ddof=1)) if len(kl) > 1 else None)
    t = Table(["model", "test subset", "D = KL(A(x^c) ‖ A(x^i))", "sharpness: KL(A(x^c) ‖ uniform)", "acc",
               "examples"], rows, plot=plot, data={"per_seed": {n: {str(s): v for s, v in d.items()}
                                                                for n, d in measured.items()}})
    t.notes = _notes(measured)
    return t


def _notes(measured: dict) -> list[str]:
    notes = [f"trained on the synthetic benchmark with incongruity {TRAIN_INCONGRUITY} (test subsets as written "
             "there); D, sharpness: means over the subset's test examples, then mean ± std over seeds; acc x100",
             "D(x) = mean over crossmodal maps, heads and valid queries of KL(A(x^c) ‖ A(x^i)): the attention of "
             "the same example with its audio/video cue congruent vs incongruent (module docstring)"]
    measured = {n: d for n, d in measured.items() if d}  # a model without a finished seed (--runs) has no notes
    means = {n: np.mean([v["kl"]["incongruent"] for v in d.values()]) for n, d in measured.items()}
    if {"mult", "hct_dmg"} <= set(means) and means["mult"] > 0:
        notes.append(f"incongruent subset: D of HCT-DMG / D of MulT = {means['hct_dmg'] / means['mult']:.3f} "
                     "(below 1: HCT-DMG's attention is distorted less, the paper's claim)")
    if "hct_dmg" in measured:
        prim = [v["primary"] for v in measured["hct_dmg"].values()]
        notes.append(f"HCT-DMG primary modality (argmax gate) per seed: {', '.join(map(str, prim))}")
    for n, d in measured.items():
        maps = {m: np.mean([v["per_map"][m]["incongruent"] for v in d.values() if m in v["per_map"]])
                for m in next(iter(d.values()))["per_map"]}
        top = max(maps, key=maps.get) if maps else None
        if top:
            notes.append(f"{n}: most distorted map on the incongruent subset: {top} (D {maps[top]:.4f}; every map "
                         "in results.json)")
    return notes


register(Experiment("hct_attention_distortion", "HCT-DMG vs MulT: KL between the crossmodal attention of an example "
                    "with congruent vs incongruent audio/video cue, on congruent and incongruent test examples",
                    runs, table))
