"""early_fusion: per-modality encoders + masked pooling + concat + MLP (our simple fusion baseline).

It has no paper of its own; the mintrec preset reuses the MIntRec baseline optimisation
(thuiar/MIntRec configs/text_bert.py: AdamW lr 2e-5, wd 0.1, warmup 0.1, batch 16, patience 8)
and a 128-unit fusion MLP (our choice). The audio/video encoders train from scratch, so their
learning rate is the same as BERT's here; raise it with --config.optimizer.lr if they lag.
"""
from configs.base import PRESETS, base_config, parse_preset

__all__ = ["PRESETS", "get_config"]


def get_config(arg: str | None = None):
    c = base_config("early_fusion", parse_preset(arg))
    c.model.hidden = 128 if c.preset == "mintrec" else 64  # our choice (no paper for this baseline)
    return c
