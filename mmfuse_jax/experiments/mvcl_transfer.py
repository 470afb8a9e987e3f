"""MVCL-DAF++ across datasets: trained on MIntRec, then fine-tuned on MIntRec2.0 starting from those
weights, attention layers included (the BERT, the modality encoders, the text-queried alignment, the
Modality-Aware Transformer, the fusion); only the classifier starts fresh, because MIntRec2.0 has another
label set (30 intents instead of 20). Against the same model trained on MIntRec2.0 from scratch, with
the same settings and seeds.

Mechanism: ``config.init_from`` (configs/base.py, `training.stages.init_from`): the fine-tuned run of
seed k starts from the best checkpoint of the MIntRec run of seed k, every top-level subtree but
``classifier`` grafted strictly (a shape mismatch is an error, not a silent fresh layer). With the real
releases (preset ``mintrec``) both MIntRec2.0 runs use MIntRec's bert-base-uncased (MIntRec2.0's own
preset uses bert-large, which cannot take bert-base weights).
"""
from mmfuse_jax.experiments import Experiment, Run, register
from mmfuse_jax.experiments.common import CLASSIFICATION, MINTREC2, mean_std_cell, metric_table

SOURCE = "mintrec"
FRESH = ("classifier",)  # the head of the 20 MIntRec intents cannot serve the 30 of MIntRec2.0


def runs(preset):
    target = {"dataset.bert_path": "pretrained/bert-base-uncased"} if preset == "mintrec" else {}
    finetune = {**target, "init_from.run": f"{{out}}/runs/{SOURCE}/seed_{{seed}}", "init_from.exclude": FRESH}
    return [Run(SOURCE, "mvcl_daf"),  # first: the fine-tuned runs read its checkpoints
            Run("finetune", "mvcl_daf", finetune, presets=MINTREC2),
            Run("scratch", "mvcl_daf", target, presets=MINTREC2)]


def first_epoch_dev(run_dirs: dict[int, str], metric: str = "acc") -> list[float]:
    """Each seed's dev ``metric`` after its first epoch (metrics.jsonl): how far the start carries."""
    from mmfuse_jax.training.logging import read_metrics

    out = []
    for run_dir in run_dirs.values():
        dev = [r for r in read_metrics(run_dir) if r.get("split") == "dev" and r.get("epoch") == 1 and metric in r]
        if dev:
            out.append(float(dev[-1][metric]))
    return out


def table(results):
    extra = lambda n: ["dev acc after epoch 1"] if n is None else [
        mean_std_cell(first_epoch_dev(results[n].seed_runs), scale=100.0, digits=2)]
    t = metric_table(results, [*CLASSIFICATION, "open_f1_oos"], extra=extra, plot_metric="acc",
                     label=lambda n: {SOURCE: "mintrec (source, its own test)"}.get(n, n))
    ft, sc = results["finetune"].mean("acc"), results["scratch"].mean("acc")
    if None not in (ft, sc):
        t.notes.append(f"MIntRec2.0 test acc, fine-tuned minus from scratch: {100 * (ft - sc):+.2f} points "
                       "(positive: what was learnt on MIntRec transfers)")
    t.notes += ["finetune: MIntRec2.0 run started from the MIntRec run of the same seed (best checkpoint), every "
                "parameter but the classifier loaded (attention layers not re-initialised); scratch: the same run "
                "from a fresh initialisation; both with the MIntRec2.0 preset's optimisation and epochs",
                "acc / f1 / weighted_f1: in-scope test rows of each run's own dataset (the mintrec row is the "
                "source on MIntRec's test split); open_f1_oos: out-of-scope F1 under DOC thresholds (MIntRec2.0 "
                "runs only); dev acc after epoch 1 (x100): how far the starting point carries early in training"]
    return t


register(Experiment("mvcl_transfer", "MVCL-DAF++ trained on MIntRec, fine-tuned on MIntRec2.0 (all but the "
                    "classifier loaded) vs trained there from scratch", runs, table,
                    presets=("demo", "tiny", "mintrec")))
