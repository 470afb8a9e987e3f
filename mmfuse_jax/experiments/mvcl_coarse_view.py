"""MVCL-DAF++'s coarse view: the paper's reading (model.coarse_view='per_modality', the default: one
global summary token per modality, the coarse-to-fine dynamic attention inside each modality encoder)
vs the earlier text-queried reading ('text_queried': one global vector from text-queried features),
on the MIntRec layout and on the MIntRec2.0 layout with out-of-scope utterances."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import INTENT_LAYOUTS, INTENT_METRICS, INTENT_NOTE, metric_table

VIEWS = ("per_modality", "text_queried")


def runs(preset):
    return [Run(f"{data}_{v}", "mvcl_daf", {"model.coarse_view": v}, presets=presets)
            for data, presets in INTENT_LAYOUTS for v in VIEWS]


def table(results):
    t = metric_table(results, INTENT_METRICS, plot_metric="acc")
    notes = []
    for data in ("mintrec", "mintrec2"):
        paper, other = (results[f"{data}_{v}"].mean("acc") for v in VIEWS)
        if None not in (paper, other):
            notes.append(f"{data}: test acc per_modality minus text_queried {100 * (paper - other):+.2f} points "
                         "(positive: the paper's reading learns better here)")
    t.notes = notes + [INTENT_NOTE]
    return t


register(Experiment("mvcl_coarse_view", "MVCL-DAF++ coarse view: per-modality global tokens (paper) vs one "
                    "text-queried global vector", runs, table, presets=("demo", "tiny", "mintrec")))
