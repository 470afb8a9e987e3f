"""Readers for the released dataset formats; each turns official files into example dicts.

An example is a plain dict: ``key`` (str), ``text`` (str), ``label`` (int or float),
``audio`` float32 [T_a, D_a], ``video`` float32 [T_v, D_v]. Readers do every format quirk;
nothing downstream knows which release an example came from. A reader (a module, or any object)
exposes ``read(root, *, feat_dims, max_lens, nonfinite, **read_options) -> ({split: [example]},
ReadReport)`` and ``LABELS`` (class names; empty for regression), plus its format's constants (file
names, feature sizes). Which folder, sizes and options a dataset uses is config
(``configs/datasets.py``), never the reader's.

`FORMATS` is the registry (``config.dataset.format`` -> reader): a new format is one module and
one line below, or one `register_format` call (a test's toy format does that in its config file).
"""
from __future__ import annotations

from typing import Any

from mmfuse_jax.data.formats import mintrec, mintrec2, mmsa, mult, mustard, urfunny
from mmfuse_jax.errors import ConfigError

FORMATS: dict[str, Any] = {"mintrec": mintrec, "mintrec2": mintrec2, "mmsa": mmsa, "mult": mult,
                           "urfunny": urfunny, "mustard": mustard}


def register_format(name: str, reader: Any, *, replace: bool = False) -> None:
    """Add ``reader`` (``read`` + ``LABELS``) as ``FORMATS[name]``; ``replace`` to overwrite one."""
    if not callable(getattr(reader, "read", None)) or not hasattr(reader, "LABELS"):
        raise ConfigError(f"format {name!r}: a reader needs a read(root, *, feat_dims, max_lens, nonfinite) "
                          "function and LABELS")
    if name in FORMATS and FORMATS[name] is not reader and not replace:
        raise ConfigError(f"format {name!r} is already registered (to {FORMATS[name]!r})")
    FORMATS[name] = reader


def get_format(name: str) -> Any:
    """The reader of ``config.dataset.format`` ``name``; an unknown name is a `ConfigError` listing them."""
    if name not in FORMATS:
        raise ConfigError(f"config.dataset.format={name!r}: expected one of {sorted(FORMATS)}")
    return FORMATS[name]
