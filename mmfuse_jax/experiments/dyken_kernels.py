"""DyKen-Hyena's kernel switches the paper leaves open: kernel_granularity ('groups': a few kernels
per token; 'channel': per-channel kernels from a low-rank generator) x dynamic_kernels ('replace': the
generated kernels are the short-conv kernels, as the paper says; 'add': static + generated), on the
MIntRec layout and on the MIntRec2.0 layout with out-of-scope intents (OOS F1 under DOC)."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import INTENT_LAYOUTS, INTENT_METRICS, INTENT_NOTE, metric_table

GRANULARITIES, KERNELS = ("groups", "channel"), ("replace", "add")


def runs(preset):
    out = []
    for data, presets in INTENT_LAYOUTS:
        for g in GRANULARITIES:
            for k in KERNELS:
                out.append(Run(f"{data}_{g}_{k}", "dyken_hyena",
                               {"model.kernel_granularity": g, "model.dynamic_kernels": k}, presets=presets))
    return out


def table(results):
    t = metric_table(results, INTENT_METRICS, plot_metric="acc")
    best = {}
    for data in ("mintrec", "mintrec2"):
        names = [n for n in results.names if n.startswith(data + "_")]
        scored = [n for n in names if results[n].mean("acc") is not None]
        if scored:
            best[data] = max(scored, key=lambda n: results[n].mean("acc"))
    t.notes = [f"{data}: highest test acc {n} ({results[n].cell('acc')})" for data, n in best.items()]
    t.notes.append(INTENT_NOTE)
    return t


register(Experiment("dyken_kernels", "DyKen-Hyena kernel_granularity groups|channel x dynamic_kernels "
                    "replace|add, on MIntRec and MIntRec2.0 (OOS F1)", runs, table,
                    presets=("demo", "tiny", "mintrec")))
