"""KuDA: does the sentiment ratio matter? The released code's ratio is a numerical no-op ('official');
the paper's description ('paper'), our attention reading ('attention', dynamic or fixed ratios at
inference) and no ratio at all ('none'), trained with the same seeds."""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import REGRESSION, metric_table, metrics_of

MODES = {"official": {"model.ratio_mode": "official"},
         "paper": {"model.ratio_mode": "paper"},
         "attention": {"model.ratio_mode": "attention", "model.ratio_inference": "dynamic"},
         "attention_fixed": {"model.ratio_mode": "attention", "model.ratio_inference": "fixed"},
         "none": {"model.ratio_mode": "none"}}


def runs(preset):
    return [Run(name, "kuda", overrides) for name, overrides in MODES.items()]


def table(results):
    metrics = metrics_of(results, "official", REGRESSION)
    t = metric_table(results, metrics, plot_metric="mae")
    best = min(results.names, key=lambda n: results[n].mean("mae") if results[n].mean("mae") is not None else 9)
    off, none = results["official"].mean("mae"), results["none"].mean("mae")
    diff = f", difference {off - none:+.4f}" if None not in (off, none) else ""
    t.notes = [f"lowest test MAE: {best} ({results[best].cell('mae')})",
               f"official vs none (the released ratio is a no-op at evaluation): MAE "
               f"{results['official'].cell('mae')} vs {results['none'].cell('mae')}{diff}",
               "attention and attention_fixed train identically (the label sets the ratios in training); they "
               "differ in the ratios used at evaluation, including the dev scores that pick the best checkpoint"]
    return t


register(Experiment("kuda_ratio_modes", "KuDA sentiment ratio: official (no-op) vs paper vs attention "
                    "(dynamic / fixed at inference) vs none", runs, table,
                    presets=("demo", "tiny", "sims", "simsv2", "mosi", "mosei")))
