"""KuDA: what does stage 1's knowledge dataset buy? Stage 1 on the knowledge dataset (the preset's
default), on the target itself, and no stage 1 at all."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import REGRESSION, metric_table, metrics_of


def runs(preset):
    return [Run("knowledge", "kuda"),
            Run("target_stage1", "kuda", {"stage1.dataset.root": ""}),
            Run("no_stage1", "kuda", {"stage1.enabled": False})]


def table(results):
    t = metric_table(results, metrics_of(results, "knowledge", REGRESSION), plot_metric="mae")
    t.notes = ["knowledge: stage 1 on the preset's knowledge dataset (demo/tiny: a second synthetic dataset with "
               "other feature sizes; mosi/mosei: CH-SIMSv2-en); target_stage1: stage 1 on the target's own "
               "unimodal labels; no_stage1: stage 2 from scratch"]
    return t


register(Experiment("kuda_knowledge", "KuDA stage 1: knowledge dataset vs the target itself vs no stage 1",
                    runs, table, presets=("demo", "tiny", "mosi", "mosei")))
