"""MVCL-DAF++'s coarse view: the paper's reading (model.coarse_view='per_modality', the default: one
global summary token per modality, the coarse-to-fine dynamic attention inside each modality encoder)
vs the earlier text-queried reading ('text_queried': one global vector from text-queried features),
on the MIntRec layout and on the MIntRec2.0 layout with out-of-scope utterances."""
from mmfuse_jax.experiments import Experiment, register
from mmfuse_jax.experiments.common import layout_runs, layout_table

VIEWS = ("per_modality", "text_queried")


def runs(preset):
    return layout_runs("mvcl_daf", "model.coarse_view", VIEWS)


def table(results):
    return layout_table(results, VIEWS, {"mintrec": "acc", "mintrec2": "acc"}, "the paper's reading learns better here")


register(Experiment("mvcl_coarse_view", "MVCL-DAF++ coarse view: per-modality global tokens (paper) vs one "
                    "text-queried global vector", runs, table, presets=("demo", "tiny", "mintrec")))
