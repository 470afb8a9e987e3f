"""The synthetic benchmarks, each written IN an official layout and read back by the normal reader.

One generator module per layout (``mintrec``, ``mintrec2``, ``mmsa``); each exposes ``NAME``, its
``SPEC`` dataclass, ``CONFIG_FIELDS`` (what a preset stores), ``COMPLETE`` (the file whose
presence means a finished write), ``generate(spec)`` and ``write(out, spec)``.

A dataset preset asks for one with ``config.dataset.synthetic = {generator: NAME, <spec fields>}``;
`ensure` writes it under ``config.dataset.root`` on first use. Real datasets leave
``synthetic`` empty (then `ensure` does nothing), and so can a test that writes its own copy.

The MIntRec-layout names (`SyntheticSpec`, `generate`, `write`, `vocabulary`) are re-exported here
for ``from mmfuse_jax.data import synthetic``; ``python -m mmfuse_jax.data.synthetic`` writes it.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from mmfuse_jax.data.synthetic import mintrec, mintrec2, mmsa
from mmfuse_jax.data.synthetic import mult as mult_iemocap
from mmfuse_jax.data.synthetic.common import KNOB_FIELDS, META_FILE, SPECIAL_TOKENS, spec_from_fields, write_random_bert
from mmfuse_jax.data.synthetic.mintrec import SyntheticSpec, generate, vocabulary, write
from mmfuse_jax.errors import ConfigError

GENERATORS: dict[str, ModuleType] = {m.NAME: m for m in (mintrec, mintrec2, mmsa, mult_iemocap)}

__all__ = ["GENERATORS", "SPECIAL_TOKENS", "SyntheticSpec", "config_fields", "ensure", "generate", "spec_of",
           "vocabulary", "write", "write_random_bert"]


def config_fields(generator: str, spec: Any) -> dict:
    """``config.dataset.synthetic`` for ``spec`` written by ``generator`` (its name and its fields)."""
    module = _generator(generator)
    return {"generator": generator, **{k: getattr(spec, k) for k in module.CONFIG_FIELDS}}


def spec_of(synthetic: Any) -> Any:
    """The spec dataclass a ``config.dataset.synthetic`` describes (the inverse of `config_fields`)."""
    fields = dict(synthetic)
    module = _generator(fields.pop("generator", None))
    return spec_from_fields(module.SPEC, fields)


def ensure(ds: Any) -> None:
    """Write the synthetic benchmark ``ds.synthetic`` names under ``ds.root`` if it is not there yet.

    A no-op for a dataset with an empty (or no) ``synthetic`` field: a real release.
    """
    synthetic = ds.get("synthetic", {})
    if not len(synthetic):
        return
    module = _generator(synthetic.get("generator"))
    spec = spec_of(synthetic)
    if not os.path.exists(os.path.join(ds.root, module.COMPLETE)):
        print(f"generating the synthetic {module.NAME} benchmark in {ds.root} ...")
        module.write(ds.root, spec)
    else:
        _check_written(ds.root, module, spec)


# Spec fields a benchmark already written under a root must match (`_check_written`), with the value
# of a benchmark written before the field existed: the knobs, and the random text encoder it wrote.
CHECKED_FIELDS: dict[str, Any] = {**dict.fromkeys(KNOB_FIELDS, 0.0), "text_encoder": "bert"}


def _check_written(root: str, module: ModuleType, spec: Any) -> None:
    """A benchmark already under ``root`` must have the knobs (and text encoder) asked for (one changed
    with the same root would silently reuse the old data): compares `CHECKED_FIELDS` with
    ``synthetic.json`` (a benchmark written before a field existed has its old value there)."""
    import json

    path = os.path.join(root, META_FILE)
    if os.path.exists(path):
        with open(path) as f:
            written = json.load(f).get("spec", {})
    else:
        written = {}
    for k in module.CONFIG_FIELDS:
        # Only these: a test or a user may point a preset at a root written with other sizes on
        # purpose, but a changed incongruity/noise level reusing old data would fake an experiment.
        was = written.get(k, CHECKED_FIELDS.get(k))
        if k in CHECKED_FIELDS and _plain(was) != _plain(getattr(spec, k)):
            raise ConfigError(f"{path}: the synthetic benchmark under {root} was written with {k}={was!r}, "
                              f"the config asks for {getattr(spec, k)!r}: set another --config.dataset.root "
                              "(and --config.dataset.bert_path) or delete that folder")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _generator(name: str | None) -> ModuleType:
    if name not in GENERATORS:
        raise ConfigError(f"config.dataset.synthetic.generator={name!r}: expected one of {sorted(GENERATORS)}")
    return GENERATORS[name]
