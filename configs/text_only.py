"""text_only: BERT classifier (the MIntRec TEXT baseline).

Presets: demo (synthetic), tiny (synthetic, tests), mintrec (thuiar/MIntRec configs/text_bert.py:
AdamW lr 2e-5, weight decay 0.1, warmup 0.1, batch 16, <= 100 epochs, patience 8, monitor f1).
Usage: python train.py --config=configs/text_only.py:mintrec --workdir=runs/text
"""
from configs.base import PRESETS, base_config, parse_preset

__all__ = ["PRESETS", "get_config"]


def get_config(arg: str | None = None):
    return base_config("text_only", parse_preset(arg))
