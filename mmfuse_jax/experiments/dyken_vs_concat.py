"""DyKen-Hyena's next check 1: its dynamic per-token kernels vs the same model with standard
cross-modal attention followed by feature concatenation (config.model.fusion='concat_attention', no
generated kernels), on the MIntRec layout and on open-intent detection (MIntRec2.0 layout, OOS F1)."""
from mmfuse_jax.experiments import Experiment, register
from mmfuse_jax.experiments.common import layout_runs, layout_table

FUSIONS = ("dynamic_kernels", "concat_attention")


def runs(preset):
    return layout_runs("dyken_hyena", "model.fusion", FUSIONS)


def table(results):
    return layout_table(results, FUSIONS, {"mintrec": "acc", "mintrec2": "open_f1_oos"}, "the kernels help")


register(Experiment("dyken_vs_concat", "DyKen-Hyena dynamic kernels vs cross-modal attention + concatenation "
                    "(MIntRec, MIntRec2.0 OOS F1)", runs, table, presets=("demo", "tiny", "mintrec")))
