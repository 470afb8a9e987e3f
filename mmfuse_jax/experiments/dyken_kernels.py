"""DyKen-Hyena's kernel switches the paper leaves open: kernel_granularity ('groups': a few kernels
per token; 'channel': per-channel kernels from a low-rank generator) x dynamic_kernels ('replace': the
generated kernels are the short-conv kernels, as the paper says; 'add': static + generated), on the
MIntRec layout and on the MIntRec2.0 layout with out-of-scope intents (OOS F1 under DOC)."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import metric_table

MINTREC2 = {"demo": "demo_mintrec2", "tiny": "tiny_mintrec2", "mintrec": "mintrec2"}
GRANULARITIES, KERNELS = ("groups", "channel"), ("replace", "add")


def runs(preset):
    out = []
    for data, presets in (("mintrec", {}), ("mintrec2", MINTREC2)):
        for g in GRANULARITIES:
            for k in KERNELS:
                out.append(Run(f"{data}_{g}_{k}", "dyken_hyena",
                               {"model.kernel_granularity": g, "model.dynamic_kernels": k}, presets=presets))
    return out


def table(results):
    t = metric_table(results, ["acc", "f1", "open_f1", "open_f1_oos"], plot_metric="acc")
    best = {}
    for data in ("mintrec", "mintrec2"):
        names = [n for n in results.names if n.startswith(data + "_")]
        scored = [n for n in names if results[n].mean("acc") is not None]
        if scored:
            best[data] = max(scored, key=lambda n: results[n].mean("acc"))
    t.notes = [f"{data}: highest test acc {n} ({results[n].cell('acc')})" for data, n in best.items()]
    t.notes.append("mintrec2 rows: acc/f1 on the in-scope test rows; open_f1 / open_f1_oos: DOC decisions over "
                   "known intents + OOS (thresholds fitted on the training split)")
    return t


register(Experiment("dyken_kernels", "DyKen-Hyena kernel_granularity groups|channel x dynamic_kernels "
                    "replace|add, on MIntRec and MIntRec2.0 (OOS F1)", runs, table,
                    presets=("demo", "tiny", "mintrec")))
