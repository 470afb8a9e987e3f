"""KuDA without the correlation-estimation (NCE) loss: config.model.nce_weight 0.1 (train.py) vs 0."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import REGRESSION, metric_table, metrics_of


def runs(preset):
    return [Run("nce_0.1", "kuda", {"model.nce_weight": 0.1}), Run("no_nce", "kuda", {"model.nce_weight": 0.0})]


def table(results):
    t = metric_table(results, metrics_of(results, "nce_0.1", REGRESSION), plot_metric="mae")
    a, b = results["nce_0.1"].mean("mae"), results["no_nce"].mean("mae")
    if None not in (a, b):
        t.notes = [f"test MAE without NCE minus with NCE: {b - a:+.4f} (positive: NCE helps)"]
    return t


register(Experiment("kuda_no_nce", "KuDA with vs without the NCE (correlation estimation) loss", runs, table,
                    presets=("demo", "tiny", "sims", "simsv2", "mosi", "mosei")))
