"""MVCL-DAF++ with each modality removed at inference (trained with all three): audio, video, both,
and text (the empty utterance, [CLS] [SEP]; mmfuse_jax/perturb.py)."""
from mmfuse_jax.experiments import Experiment, Run, Table, register

DROPS = ("drop:audio", "drop:video", "drop:audio,drop:video", "drop:text")


def runs(preset):
    presets = {"mintrec2": "mintrec2"}
    return [Run("mvcl", "mvcl_daf", presets=presets, perturbations=DROPS)]


def table(results):
    r = results["mvcl"]
    rows = [["none", r.cell("acc"), r.cell("f1")]] + [[p, r.cell("acc", perturbation=p), r.cell("f1", perturbation=p)]
                                                     for p in DROPS]
    t = Table(["removed at inference", "acc", "f1"], rows)
    clean = r.mean("acc")
    drops = {p: r.mean("acc", perturbation=p) for p in DROPS}
    t.plot = {"labels": ["none", *DROPS], "means": [None if v is None else 100 * v for v in [clean, *drops.values()]],
              "stds": [None] * (len(DROPS) + 1), "ylabel": "test acc (x100)"}
    if clean is not None and None not in drops.values():
        worst = min(drops, key=drops.get)
        t.notes = [f"largest drop: {worst} (acc {100 * clean:.2f} -> {100 * drops[worst]:.2f})"]
    return t


register(Experiment("mvcl_modality_ablation", "MVCL-DAF++ with audio, video, both or text removed at inference",
                    runs, table, presets=("demo", "tiny", "mintrec", "mintrec2")))
