"""hct_dmg: Hierarchical Crossmodal Transformer with Dynamic Modality Gating (arXiv 2305.13583).

Presets: mosi, mosei, iemocap (MulT pickles, GloVe text as in the paper; <name>_aligned for the
aligned files), urfunny, mustard, demo (synthetic), tiny (tests). There is no official code and
our notes hold no hyperparameter table of the paper: the sizes, dropouts and optimisation are
MulT's Table 5 per dataset (configs/affect.py), so the two models are compared at
equal settings. Ablation: --config.model.dynamic_gating=False --config.model.primary=text.
Gate plot: python -m mmfuse_jax.models.hct_dmg_gates --workdir=<run> (needs one checkpoint per
epoch: --config.keep_checkpoints=<num_epochs>; the demo/tiny presets keep them all).
Usage: python train.py --config=configs/hct_dmg.py:mosi --workdir=runs/hct_mosi
"""
from configs.affect import PRESETS, affect_config

__all__ = ["PRESETS", "get_config"]


def get_config(arg: str | None = None):
    c = affect_config("hct_dmg", arg)
    c.model.dynamic_gating = True   # the paper's DMG; False = a fixed primary (ablation)
    c.model.primary = "text"        # the fixed primary of the ablation (the paper's language-first prior)
    if c.preset in ("demo", "tiny"):
        c.keep_checkpoints = c.num_epochs + 1  # one checkpoint per epoch for the gate plot
    return c
