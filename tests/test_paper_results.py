"""The papers' numbers: which entry matches a run's config, and the comparison table."""
from __future__ import annotations

from mmfuse_jax import paper_results


def test_an_ablation_switch_picks_the_matching_paper_row():
    dyken = {"model_name": "dyken_hyena", "model": {"dynamic_short_conv": False},
             "dataset": {"name": "mintrec2", "oos_label": 30}}
    assert [p.metrics for p in paper_results.paper_results(dyken)] == [{"f1_oos": 0.0}]
    dyken["model"]["dynamic_short_conv"] = True
    assert [p.metrics for p in paper_results.paper_results(dyken)] == [{"f1_oos": 22.73}]
    assert paper_results.paper_results({"model_name": "dyken_hyena", "dataset": {"name": "synthetic"}}) == []


def test_comparison_table_puts_ours_beside_the_paper():
    config = {"model_name": "mvcl_daf", "dataset": {"name": "mintrec"}}
    evals = {"test": {"metrics": {"acc": 0.7512, "weighted_f1": 0.7466, "weighted_prec": 0.76}}}
    lines = paper_results.comparison_table(config, evals)
    assert "| acc (test) | 76.18 | 75.12 | -1.06 |" in lines
    assert "| weighted_f1 (test) | 75.66 | 74.66 | -1.00 |" in lines
    assert "| rec (test) | 74.39 | – | – |" in lines  # a metric we did not compute
    assert lines[-1].startswith("Source: MVCL-DAF++ (arXiv 2509.17446)")
    open_intent = {"model_name": "dyken_hyena", "model": {"dynamic_short_conv": True}, "dataset": {"name": "mintrec2"}}
    rows = paper_results.comparison_table(open_intent, {"test": {"metrics": {}, "open_intent": {"f1_oos": 0.25}}})
    assert "| f1_oos (test (open intent)) | 22.73 | 25.00 | +2.27 |" in rows


def test_format_metric_prints_as_the_papers():
    assert paper_results.format_metric("acc", 0.75123) == "75.12"
    assert paper_results.format_metric("mae", 0.40812) == "0.408"
    assert paper_results.format_metric("open_corr", 0.5) == "0.500"
    assert paper_results.format_metric("f1", None) == "–"
