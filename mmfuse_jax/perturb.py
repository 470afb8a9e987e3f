"""Perturbations of a Batch at evaluation time: ``eval.py --perturb=drop:audio,noise:video:0.5``.

A spec is comma-separated parts, applied left to right; each part is ``<kind>:<modality>[:<arg>]``:

    drop:<m>         the modality is absent: audio/video zeros with an all-zero mask (the Batch contract's
                     missing modality); text: the empty utterance, ``[CLS] [SEP]`` (the first and last real
                     token kept, every other id 0 and masked out), because every text model needs at least
                     one real position to attend to (precomputed text features: all zero, one position kept)
    zero:<m>         features set to 0, masks kept (audio/video, or precomputed text features; not token ids)
    noise:<m>:<std>  Gaussian noise of standard deviation <std> added to the real frames (not the padding)
    shuffle:<m>      every real row gets the modality (features and mask) of another real row of the same batch
                     (a random cycle over the batch's rows, so never its own; all parts touch real rows only)

Randomness (noise, shuffle) is seeded: ``default_rng([seed, batch index, part index])``, so the same
command gives the same numbers. `apply` is a pure function of the batch (a new dict; labels, ``valid``
and the other modalities are the input's own arrays). Evaluations under a spec are written as
``eval_<split>__<slug>.json`` (`file_suffix`), so the unperturbed ``eval_<split>.json`` stays.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mmfuse_jax.batch import MODALITIES
from mmfuse_jax.errors import ConfigError

KINDS = ("drop", "zero", "noise", "shuffle")


@dataclasses.dataclass(frozen=True)
class Perturbation:
    kind: str
    modality: str
    std: float = 0.0

    @property
    def slug(self) -> str:
        return "-".join([self.kind, self.modality] + ([f"{self.std:g}"] if self.kind == "noise" else []))


def _part(part: str, spec: str) -> Perturbation:
    bits = part.strip().split(":")
    usage = "<kind>:<modality>[:<std>] with kind in drop|zero|noise|shuffle, modality in text|audio|video"
    if len(bits) < 2 or bits[0] not in KINDS:
        raise ConfigError(f"--perturb={spec!r}: {part!r} is not {usage} (e.g. drop:audio,noise:video:0.5)")
    kind, modality = bits[0], bits[1]
    if modality not in MODALITIES:
        raise ConfigError(f"--perturb={spec!r}: unknown modality {modality!r} in {part!r}: expected one of "
                          f"{list(MODALITIES)}")
    if kind != "noise":
        if len(bits) != 2:
            raise ConfigError(f"--perturb={spec!r}: {part!r} takes no argument (expected {kind}:{modality})")
        return Perturbation(kind, modality)
    try:
        std = float(bits[2]) if len(bits) == 3 else None
    except ValueError:
        std = None
    if std is None or not np.isfinite(std) or std <= 0:
        raise ConfigError(f"--perturb={spec!r}: {part!r} needs a positive standard deviation, "
                          f"e.g. noise:{modality}:0.5")
    return Perturbation(kind, modality, std)


def parse(spec: str) -> tuple[Perturbation, ...]:
    """The parts of ``spec`` (empty for ``''``); a `ConfigError` naming the bad part."""
    if not spec or not spec.strip():
        return ()
    return tuple(_part(p, spec) for p in spec.split(","))


def split_list(text: str) -> list[str]:
    """Several specs separated by ``;`` (each one evaluation), e.g. ``'drop:audio;drop:video'``."""
    specs = [s.strip() for s in (text or "").split(";") if s.strip()]
    for s in specs:
        parse(s)
    return specs


def slug(spec: str) -> str:
    """``'drop:audio,noise:video:0.5'`` -> ``'drop-audio+noise-video-0.5'`` (file names, table rows)."""
    return "+".join(p.slug for p in parse(spec))


def file_suffix(spec: str) -> str:
    """``'__<slug>'`` for eval file names (``''`` for no perturbation)."""
    return f"__{slug(spec)}" if parse(spec) else ""


# ------------------------------------------------------------------------------------- applying

def _real_rows(batch) -> np.ndarray:
    return np.flatnonzero(np.asarray(batch["valid"]) > 0)


def _keys(batch, modality: str) -> tuple[list[str], str]:
    """(the arrays that make up ``modality`` in ``batch``, its mask key)."""
    if modality != "text":
        return [modality, f"{modality}_mask"], f"{modality}_mask"
    return [k for k in ("text_ids", "text_mask", "text_type_ids", "text") if k in batch], "text_mask"


def _drop_text(out: dict) -> None:
    mask = np.asarray(out["text_mask"])
    keep = np.zeros_like(mask)
    real = mask.sum(1) > 0
    keep[real, 0] = 1
    last = np.maximum(mask.sum(1) - 1, 0)  # readers left-align tokens: the last real one is [SEP]
    keep[np.arange(len(mask))[real], last[real]] = 1
    out["text_mask"] = keep
    out["text_ids"] = np.where(keep > 0, out["text_ids"], 0).astype(np.asarray(out["text_ids"]).dtype)
    out["text_type_ids"] = np.zeros_like(out["text_type_ids"])
    if "text" in out:
        out["text"] = np.zeros_like(out["text"])


def _noise(x: np.ndarray, mask: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(x.shape).astype(x.dtype) * std
    return x + noise * (np.asarray(mask) > 0)[..., None].astype(x.dtype)


def _shuffle(out: dict, keys: list[str], rows: np.ndarray, rng: np.random.Generator) -> None:
    if len(rows) < 2:
        return
    order = rng.permutation(rows)
    source = np.roll(order, -1)  # each real row takes the next one's in a random cycle: never its own
    for k in keys:
        arr = np.array(out[k])
        arr[order] = np.asarray(out[k])[source]
        out[k] = arr


def _apply_one(out: dict, p: Perturbation, rng: np.random.Generator) -> None:
    keys, mask_key = _keys(out, p.modality)
    feature = p.modality if p.modality != "text" else ("text" if "text" in out else None)
    if p.kind in ("zero", "noise") and feature is None:
        raise ConfigError(f"perturbation {p.kind}:text: this dataset's text is token ids, which cannot be "
                          "zeroed or noised; use drop:text (the empty utterance) or shuffle:text")
    if p.kind == "drop" and p.modality == "text":
        _drop_text(out)
    elif p.kind == "drop":
        out[p.modality] = np.zeros_like(out[p.modality])
        out[mask_key] = np.zeros_like(out[mask_key])
    elif p.kind == "zero":
        out[feature] = np.zeros_like(out[feature])
    elif p.kind == "noise":
        out[feature] = _noise(np.asarray(out[feature]), out[mask_key], p.std, rng)
    else:
        _shuffle(out, keys, _real_rows(out), rng)


def apply(batch: dict, spec: str | tuple[Perturbation, ...], *, seed: int = 0, index: int = 0) -> dict:
    """``batch`` with the perturbations of ``spec`` applied (a new dict; the input is not modified).
    ``index``: the batch's position in its split (with ``seed``, what the random draws depend on)."""
    parts = parse(spec) if isinstance(spec, str) else spec
    out = dict(batch)
    for i, p in enumerate(parts):
        _apply_one(out, p, np.random.default_rng([seed, index, i]))
    pad = np.asarray(batch["valid"]) <= 0  # rows that only pad the batch stay as they were
    if pad.any():
        for k in out:
            if out[k] is not batch[k]:
                out[k] = np.where(pad.reshape((-1,) + (1,) * (np.ndim(out[k]) - 1)), batch[k], out[k])
    return out


def transform(spec: str, seed: int):
    """``fn(batch, index) -> batch`` for `training.experiment.predict_split` (None for no perturbation)."""
    parts = parse(spec)
    if not parts:
        return None
    return lambda batch, index: apply(batch, parts, seed=seed, index=index)
