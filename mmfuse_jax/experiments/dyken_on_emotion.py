"""DyKen-Hyena, unchanged, on emotion recognition (IEMOCAP in the MulT layout; the synthetic presets
demo_iemocap / tiny_iemocap): the full model, its concatenation variant, and text alone
(model.use_context=False: no audio/video), with MulT's IEMOCAP metrics (per-emotion acc/F1)."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import metric_table
from mmfuse_jax.metrics import EMOTIONS

PRESETS = {"demo": "demo_iemocap", "tiny": "tiny_iemocap"}
VARIANTS = {"dyken": {}, "concat_attention": {"model.fusion": "concat_attention"},
            "text_only": {"model.use_context": False}}


def runs(preset):
    return [Run(name, "dyken_hyena", overrides, presets=PRESETS) for name, overrides in VARIANTS.items()]


def table(results):
    t = metric_table(results, ["acc", "f1", *(f"{e}_f1" for e in EMOTIONS)], plot_metric="f1")
    full, text = results["dyken"].mean("f1"), results["text_only"].mean("f1")
    if None not in (full, text):
        t.notes = [f"mean weighted F1, full model minus text only: {100 * (full - text):+.2f} "
                   "(positive: audio/video reach the decision)"]
    return t


register(Experiment("dyken_on_emotion", "DyKen-Hyena unchanged on IEMOCAP-layout emotion data (vs concat, "
                    "text only)", runs, table, presets=("demo", "tiny")))
