"""A model's training recipe (`registry.Stage`s) made concrete: each stage's config, run folder and
warm start. `loop.run` trains the stages in order with the shared loop; evaluation reads the final one.

    <workdir>/<stage.name>   one stage's run (``""``: the workdir itself, what one-stage models use)

A stage with ``warm_start`` starts from fresh params into which every top-level subtree of the named
earlier stages' checkpoints (their ``select``: ``'best'`` or ``'last'``) is grafted; its ``frozen``
regexes go to the optimizer (`state.make_optimizer`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training.checkpoint import read_checkpoint


@dataclasses.dataclass(frozen=True)
class PlannedStage:
    """One stage of a run: the recipe's `Stage`, its config and its run folder."""

    stage: registry.Stage
    config: Any
    run_dir: str

    @property
    def label(self) -> str:
        return self.stage.name or "run"


def plan(config, workdir: str) -> list[PlannedStage]:
    """The stages of ``config``'s model (`ModelSpec.stages`), in training order, checked: unique
    names, warm starts from earlier stages only, known checkpoint selections."""
    recipe = registry.get(config.model_name).stages(config)
    if not recipe:
        raise ConfigError(f"model {config.model_name!r} declares no training stage")
    seen: set[str] = set()
    for s in recipe:
        if s.name in seen:
            raise ConfigError(f"model {config.model_name!r}: stage {s.name!r} declared twice")
        missing = [w for w in s.warm_start if w not in seen]
        if missing:
            raise ConfigError(f"model {config.model_name!r}: stage {s.name!r} warm-starts from {missing}, "
                              f"which are not earlier stages (earlier: {sorted(seen)})")
        if s.select not in ("best", "last"):
            raise ConfigError(f"model {config.model_name!r}: stage {s.name!r} select={s.select!r}: "
                              "expected 'best' or 'last'")
        seen.add(s.name)
    return [PlannedStage(s, s.configure(config), os.path.join(workdir, s.name) if s.name else workdir)
            for s in recipe]


def final(config, workdir: str) -> PlannedStage:
    """The last stage: the one evaluation, prediction and the report use."""
    return plan(config, workdir)[-1]


def warm_start_fn(planned: PlannedStage, stages: list[PlannedStage]):
    """``init_fn(params) -> params`` grafting the stage's warm-start sources, or None if it has none."""
    if not planned.stage.warm_start:
        return None
    by_name = {p.stage.name: p for p in stages}
    sources = [by_name[name] for name in planned.stage.warm_start]

    def init_fn(params):
        trees = [(f"stage {s.label} ({s.run_dir})", restore_params(s.run_dir, s.stage.select)) for s in sources]
        return graft(params, trees, target=f"stage {planned.label}")
    return init_fn


def restore_params(run_dir: str, which: str = "last") -> dict:
    """Params of a finished run (host numpy arrays): its latest checkpoint (``'last'``) or its best
    one (``'best'``), through `checkpoint.read_checkpoint`."""
    return read_checkpoint(run_dir, which)[0]


def graft(params: dict, sources: list[tuple[str, dict]], *, target: str = "the model") -> dict:
    """``params`` with every top-level subtree that a source holds replaced by the source's copy.

    ``sources``: ``[(where, params)]``; ``where`` names the source in errors. A source subtree the
    target lacks, or whose structure or shapes differ, is a `ConfigError`.
    """
    params = dict(params)
    for where, src in sources:
        for name, tree in src.items():
            if name not in params:
                raise ConfigError(f"{where} has parameters '{name}' that {target} lacks "
                                  f"(it has {sorted(params)})")
            want = traverse_util.flatten_dict(params[name])
            got = traverse_util.flatten_dict(tree)
            bad = sorted(set(want) ^ set(got)) or [k for k, v in want.items() if np.shape(got[k]) != np.shape(v)]
            if bad:
                key = "/".join(map(str, bad[0]))
                raise ConfigError(f"{where} parameters '{name}' do not match {target} at '{name}/{key}' "
                                  "(different lengths, feature sizes or model config)")
            params[name] = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, old.dtype), tree, params[name])
    return params
