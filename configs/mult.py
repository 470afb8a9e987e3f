"""mult: the Multimodal Transformer baseline (Tsai et al. 2019; yaohungt/Multimodal-Transformer).

Presets: mosi, mosei, iemocap (MulT pickles, unaligned; <name>_aligned for the aligned files),
urfunny, mustard, demo (synthetic), tiny (tests). Hyperparameters: MulT paper Table 5 and main.py
defaults, listed with their sources in configs/affect.py. The official code fixes
d = 30, Conv1d kernel 1 and 5 layers x 5 heads; reproduce it with --config.model.dim=30
--config.model.num_layers=5 --config.model.num_heads=5 --config.model.conv_kernel='(1,1,1)'.
Usage: python train.py --config=configs/mult.py:mosei --workdir=runs/mult_mosei
"""
from configs.affect import PRESETS, affect_config

__all__ = ["PRESETS", "get_config"]


def get_config(arg: str | None = None):
    c = affect_config("mult", arg)
    c.model.targets = ("text", "audio", "video")  # all three (main.py without --lonly/--aonly/--vonly)
    return c
