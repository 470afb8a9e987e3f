"""Features of new media for a trained run: ``predict.py --media`` (the run's recorded settings)."""
from __future__ import annotations

from typing import Any

from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.extract import decode
from mmfuse_jax.extract import settings as S


def run_settings(config) -> dict:
    """The extractor settings a run was trained with (``config.dataset.features``), checked."""
    feats = config.dataset.get("features")
    if not feats:
        raise ConfigError("this run was not trained on features from `python -m mmfuse_jax.extract` "
                          "(its config.dataset has no 'features'): give feature arrays (--input) instead of media")
    feats = feats.to_dict() if hasattr(feats, "to_dict") else dict(feats)
    settings = _plain(feats["settings"])
    if S.fingerprint(settings) != feats.get("fingerprint"):
        raise ConfigError("config.dataset.features.settings no longer match their fingerprint: the run's "
                          "config.json was edited")
    if settings.get("version") != S.VERSION:
        raise ConfigError(f"the run's features were made by extractor version {settings.get('version')}; this "
                          f"one is version {S.VERSION} and would process media differently")
    return settings


def _plain(x: Any) -> Any:
    """JSON-shaped copy (ConfigDict stores lists as tuples), so the fingerprint is the extraction's."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def media_examples(examples: list[dict], settings: dict) -> list[dict]:
    """Replace each example's ``media`` (a path) by its ``audio`` and ``video`` features."""
    out = []
    for i, ex in enumerate(examples):
        if "media" not in ex:
            out.append(ex)
            continue
        path = ex["media"]
        try:
            feats = S.extract_file(path, settings)
        except decode.MediaError as e:
            raise DataError(path, f"example #{i + 1} 'media'", "a media file with audio and video", str(e)) from None
        out.append({**{k: v for k, v in ex.items() if k != "media"}, **feats})
    return out
