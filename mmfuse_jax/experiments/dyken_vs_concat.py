"""DyKen-Hyena's next check 1: its dynamic per-token kernels vs the same model with standard
cross-modal attention followed by feature concatenation (config.model.fusion='concat_attention', no
generated kernels), on the MIntRec layout and on open-intent detection (MIntRec2.0 layout, OOS F1)."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import INTENT_LAYOUTS, INTENT_METRICS, INTENT_NOTE, metric_table

FUSIONS = ("dynamic_kernels", "concat_attention")


def runs(preset):
    return [Run(f"{data}_{fusion}", "dyken_hyena", {"model.fusion": fusion}, presets=presets)
            for data, presets in INTENT_LAYOUTS for fusion in FUSIONS]


def table(results):
    t = metric_table(results, INTENT_METRICS, plot_metric="acc")
    notes = []
    for data, metric in (("mintrec", "acc"), ("mintrec2", "open_f1_oos")):
        dyn, cat = (results[f"{data}_{f}"].mean(metric) for f in FUSIONS)
        if None not in (dyn, cat):
            notes.append(f"{data}: test {metric} dynamic kernels minus concatenation {100 * (dyn - cat):+.2f} "
                         "(positive: the kernels help)")
    t.notes = notes + [INTENT_NOTE]
    return t


register(Experiment("dyken_vs_concat", "DyKen-Hyena dynamic kernels vs cross-modal attention + concatenation "
                    "(MIntRec, MIntRec2.0 OOS F1)", runs, table, presets=("demo", "tiny", "mintrec")))
