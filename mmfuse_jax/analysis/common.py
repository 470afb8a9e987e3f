"""What every analysis shares: the `Section` it returns and the names a model's spec gives its outputs."""
from __future__ import annotations

from typing import NamedTuple

from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError


class Section(NamedTuple):
    """One item of a run report: a titled PNG (``path``) and/or markdown text (``markdown``)."""

    title: str
    path: str | None = None
    markdown: str = ""


def output_labels(config: dict, output: str, size: int) -> tuple[str, ...]:
    """The names the model's `registry.ModelSpec.output_labels` gives the ``size`` columns of ``output``."""
    spec = registry.get(config.get("model_name"))
    names = spec.output_labels.get(output)
    if names is None:
        raise ConfigError(f"model {spec.name!r} declares no output_labels[{output!r}] in its ModelSpec: "
                          f"cannot name the {size} columns of its {output!r} output")
    if len(names) != size:
        raise ConfigError(f"model {spec.name!r}: output_labels[{output!r}] = {names} names {len(names)} "
                          f"columns, but the {output!r} output has {size}")
    return tuple(names)
