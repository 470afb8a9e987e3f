"""KuDA's open question on fusion: its dynamic modality attention fusion (config.model.fusion='attention',
the official DyRout blocks) vs concatenation and vs addition of the modality representations."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import REGRESSION, metric_table, metrics_of

FUSIONS = ("attention", "concat", "add")


def runs(preset):
    return [Run(f, "kuda", {"model.fusion": f}) for f in FUSIONS]


def table(results):
    t = metric_table(results, metrics_of(results, "attention", REGRESSION), plot_metric="mae")
    base = results["attention"].mean("mae")
    notes = []
    for f in FUSIONS[1:]:
        other = results[f].mean("mae")
        if None not in (base, other):
            notes.append(f"test MAE {f} minus attention: {other - base:+.4f} (positive: attention fusion helps)")
    t.notes = notes
    return t


register(Experiment("kuda_fusion_variants", "KuDA dynamic attention fusion vs concatenation vs addition", runs,
                    table, presets=("demo", "tiny", "sims", "simsv2", "mosi", "mosei")))
