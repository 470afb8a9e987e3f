"""The papers' reported numbers per (model, dataset), and how tables print metrics.

The report puts them beside a run's numbers when the run is one of the papers' benchmark presets.
"""
from __future__ import annotations

import dataclasses

from mmfuse_jax.runfiles import config_value

RAW = ("mae", "corr")  # printed as fractions, as the papers do; every other metric x100


def format_metric(name: str, value: float | None) -> str:
    """``value`` as the tables print it: x100 with 2 decimals, or 3 decimals for mae and corr."""
    if value is None:
        return "–"
    return f"{value:.3f}" if name.removeprefix("open_") in RAW else f"{100 * value:.2f}"


@dataclasses.dataclass(frozen=True)
class PaperResult:
    """Numbers a paper reports for (model, dataset), as printed (x100 but mae/corr), named as our
    metrics; ``table``: which of our rows they compare with (``test`` or ``test (open intent)``)."""

    model: str
    dataset: str
    table: str
    metrics: dict
    source: str
    when: tuple = ()   # (config path, value) pairs that must hold, e.g. an ablation switch


# From the paper summaries and REFERENCE_NOTES in shared/papers (only numbers stated there).
PAPER_RESULTS = (
    PaperResult("mvcl_daf", "mintrec", "test",
                {"acc": 76.18, "weighted_f1": 75.66, "weighted_prec": 76.17, "rec": 74.39},
                "MVCL-DAF++ (arXiv 2509.17446), MIntRec results"),
    PaperResult("mvcl_daf", "mintrec2", "test", {"acc": 60.40, "weighted_f1": 59.23},
                "MVCL-DAF++ (arXiv 2509.17446), MIntRec2.0 results"),
    PaperResult("mag_bert", "mintrec", "test", {"acc": 72.65, "f1": 68.64},
                "MIntRec baseline MAG-BERT (thuiar/MIntRec), as quoted in REFERENCE_NOTES"),
    PaperResult("mult", "mintrec", "test", {"acc": 72.52, "f1": 69.25},
                "MIntRec baseline MulT (thuiar/MIntRec), as quoted in REFERENCE_NOTES"),
    PaperResult("dyken_hyena", "mintrec2", "test (open intent)", {"f1_oos": 22.73},
                "DyKen-Hyena (arXiv 2509.09940), ablation table, full model",
                (("model.dynamic_short_conv", True),)),
    PaperResult("dyken_hyena", "mintrec2", "test (open intent)", {"f1_oos": 0.0},
                "DyKen-Hyena (arXiv 2509.09940), ablation table, w/o dynamic short conv",
                (("model.dynamic_short_conv", False),)),
)


def paper_results(config: dict) -> list[PaperResult]:
    """The `PAPER_RESULTS` entries that match ``config`` (a resolved config as a dict)."""
    model, dataset = config.get("model_name"), config_value(config, "dataset.name")
    return [p for p in PAPER_RESULTS if p.model == model and p.dataset == dataset
            and all(config_value(config, k) == v for k, v in p.when)]


def comparison_table(config: dict, evals: dict[str, dict]) -> list[str]:
    """Markdown lines: the paper's numbers, ours from the ``eval_<split>.json`` records, the gap."""
    found = paper_results(config)
    if not found:
        return ["No paper numbers for this model and dataset (not one of the papers' benchmark presets)."]
    lines = ["| metric | paper | ours | ours − paper |", "|---|---:|---:|---:|"]
    for p in found:
        split, _, table = p.table.partition(" (")
        ours = evals.get(split, {}).get("open_intent" if table else "metrics", {})
        for name, value in p.metrics.items():
            mine = (1 if name in RAW else 100) * ours[name] if name in ours else None
            lines.append(f"| {name} ({p.table}) | {value:.2f} | " +
                         (f"{mine:.2f} | {mine - value:+.2f} |" if mine is not None else "– | – |"))
    return lines + [""] + [f"Source: {p.source}." for p in found]
