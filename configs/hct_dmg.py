"""hct_dmg: Hierarchical Crossmodal Transformer with Dynamic Modality Gating (arXiv 2305.13583).

Presets: mosi, mosei, iemocap (MulT pickles, GloVe text as in the paper; <name>_aligned for the
aligned files), urfunny, mustard, demo (synthetic), tiny (tests). There is no official code and
our notes hold no hyperparameter table of the paper: the sizes, dropouts (attention dropout by
source modality), memory depth and schedule (ReduceLROnPlateau on the dev loss) are MulT's per
dataset (configs/affect.py), as the paper reuses MulT's setup. With gate freezing, stage 2 starts a
fresh optimizer (Adam moments and the plateau factor; our choice, the paper is silent).
Gate freezing (the paper's "modality gating freezing mechanism", models/hct_dmg.py `stages`): on by
default; stage 1 (<workdir>/learn_gate) trains the gate until its early stop, stage 2
(<workdir>/frozen_gate) continues from it with the gate frozen. Continuous gate (one stage in the
workdir): --config.gate_freeze.enabled=False.
Ablation: --config.model.dynamic_gating=False --config.model.primary=text.
Gate plot: python -m mmfuse_jax.analysis.gates --workdir=<run>/learn_gate (needs one checkpoint per
epoch: --config.keep_checkpoints=<num_epochs>; the demo/tiny presets keep them all).
Usage: python train.py --config=configs/hct_dmg.py:mosi --workdir=runs/hct_mosi
"""
import ml_collections

from configs.affect import PRESETS, affect_config

__all__ = ["PRESETS", "get_config"]


def get_config(arg: str | None = None):
    c = affect_config("hct_dmg", arg)
    c.model.dynamic_gating = True   # the paper's DMG; False = a fixed primary (ablation)
    c.model.primary = "text"        # the fixed primary of the ablation (the paper's language-first prior)
    # The paper: gate weights frozen "after convergence"; it gives no criterion or epoch count, so
    # ours: stage 1 ends at its own early stop ('early_stop'; or exactly `epoch` epochs: 'epoch'),
    # stage 2 starts from stage 1's `select` checkpoint and trains `epochs` more (0: num_epochs).
    c.gate_freeze = ml_collections.ConfigDict({"enabled": True, "criterion": "early_stop", "epoch": 0,
                                               "select": "best", "epochs": 0})
    if c.preset in ("demo", "tiny"):
        c.keep_checkpoints = c.num_epochs + 1  # one checkpoint per epoch for the gate plot
    return c
