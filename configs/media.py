"""A model trained on your own media, extracted by ``python -m mmfuse_jax.extract`` (README "Your own videos").

    python train.py --config=configs/media.py:early_fusion,mintrec,data/own --workdir=runs/own

The argument is ``MODEL[,PRESET],FOLDER``: MODEL's config (``configs/<MODEL>.py``) with PRESET's
optimisation recipe (default ``mintrec``: the MIntRec baseline recipe for a pretrained BERT; ``tiny``
or ``demo`` for quick runs), and ``config.dataset`` built from FOLDER's ``features.json``: its layout
(``mintrec`` -> classification with the clips' own labels, ``mmsa`` -> regression), feature sizes,
the longest sequences extracted up to `MAX_FRAMES` (``max_len``; change with --config.dataset.max_len.audio=...),
the BERT it was tokenised for, and the extractor settings themselves (``config.dataset.features``,
saved in the run's config.json, so ``predict.py --media`` extracts new clips exactly the same way).
"""
from __future__ import annotations

import importlib

import ml_collections

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.extract.run import load_features_json

# Longest sequences a run keeps by default (our choice; longer clips are cut, and `prepare` counts them):
# ~23 s of audio at the sims hop (512 / 22050 Hz), 20 s at the general hop, 30 s of video at 10 fps.
# MIntRec's own bounds are 480 audio / 230 video frames (configs/datasets.py).
MAX_FRAMES = {"audio": 1000, "video": 300}


def media_dataset(root: str) -> ml_collections.ConfigDict:
    info = load_features_json(root)
    max_len = {m: min(n, MAX_FRAMES[m]) if m in MAX_FRAMES else n for m, n in info["max_len"].items()}
    ds = {"format": info["layout"], "name": "media", "root": root, "bert_path": info["bert_path"],
          "feat_dims": dict(info["feat_dims"]), "max_len": max_len, "task": info["task"],
          "metric": info["metric"], "nonfinite": "error", "prepared_dir": "", "synthetic": {},
          "num_buckets": 2,  # our choice: two compiled shapes for clips of mixed lengths
          "features": {"fingerprint": info["fingerprint"], "settings": info["settings"]}}
    if info["layout"] == "mintrec":
        ds["read_options"] = {"labels": tuple(info["labels"])}  # training/experiment.py reads the class names here
    return ml_collections.ConfigDict(ds)


def get_config(arg: str | None = None):
    parts = [p for p in (arg or "").split(",") if p]
    if len(parts) not in (2, 3):
        raise ConfigError(f"configs/media.py:{arg}: expected MODEL[,PRESET],FOLDER "
                          "(e.g. configs/media.py:early_fusion,mintrec,data/own)")
    model, preset, root = (parts[0], "mintrec", parts[1]) if len(parts) == 2 else parts
    try:
        module = importlib.import_module(f"configs.{model}")
    except ModuleNotFoundError:
        raise ConfigError(f"configs/media.py: no configs/{model}.py") from None
    c = module.get_config(preset)
    c.dataset = media_dataset(root)
    if c.dataset.task == "regression":
        c.early_stop_metric, c.early_stop_mode = "mae", "min"
    return c
