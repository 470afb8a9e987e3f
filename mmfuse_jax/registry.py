"""Name -> model. Adding a model is one file in `models/` that calls `register`, and one import line
in `models/__init__.py`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mmfuse_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build its Linen module and its loss.

    build(config.model, info) -> nn.Module, where ``info`` has ``num_classes`` and ``bert``
    (a `BertConfig` or None). loss_fn(outputs, batch) -> (scalar loss, dict of aux scalars),
    every reduction weighted by ``batch['valid']``.
    """

    name: str
    build: Callable[[Any, dict], Any]
    loss_fn: Callable[[dict, dict], tuple[Any, dict]]
    task: str = "classification"
    uses_bert: bool = True


_MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    _MODELS[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    import mmfuse_jax.models  # noqa: F401  (registers every model)

    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}: expected one of {sorted(_MODELS)}")
    return _MODELS[name]


def names() -> list[str]:
    import mmfuse_jax.models  # noqa: F401

    return sorted(_MODELS)
