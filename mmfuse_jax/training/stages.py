"""A model's training recipe (`registry.Stage`s) made concrete: each stage's config, run folder and
warm start. `loop.run` trains the stages in order with the shared loop; evaluation reads the final one.

    <workdir>/<stage.name>   one stage's run (``""``: the workdir itself, what one-stage models use)

A stage with ``warm_start`` starts from fresh params into which every top-level subtree of the named
earlier stages' checkpoints (their ``select``: ``'best'`` or ``'last'``) is grafted (``warm_start_fit``:
``'strict'``, all of it or a `ConfigError`; ``'fitting'``, every layer whose shapes fit, the rest
reported); its ``frozen`` regexes go to the optimizer (`state.make_optimizer`). The recipe's first
stage may instead start from another finished run (``config.init_from``: `init_from`; e.g. fine-tuning
on a second dataset with a fresh classifier).
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
    names, warm starts from earlier stages only, known checkpoint selections; each configured (what
    training needs: e.g. KuDA's stage-1 configs check that their knowledge dataset exists)."""
    return [_planned(s, config, workdir) for s in _recipe(config)]


def final(config, workdir: str) -> PlannedStage:
    """The last stage: the one evaluation, prediction and the report use. Only it is configured, so
    evaluating a finished run never needs what the earlier stages trained on."""
    return _planned(_recipe(config)[-1], config, workdir)


def _planned(s: registry.Stage, config, workdir: str) -> PlannedStage:
    return PlannedStage(s, s.configure(config), os.path.join(workdir, s.name) if s.name else workdir)


def _recipe(config) -> list[registry.Stage]:
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
        if s.warm_start_fit not in registry.WARM_START_FITS:
            raise ConfigError(f"model {config.model_name!r}: stage {s.name!r} warm_start_fit={s.warm_start_fit!r}: "
                              f"expected one of {list(registry.WARM_START_FITS)}")
        seen.add(s.name)
    return recipe


def warm_start_fn(planned: PlannedStage, stages: list[PlannedStage]):
    """``init_fn(params) -> params`` grafting the stage's warm-start sources, or None if it has none.
    The recipe's first stage also starts from ``config.init_from`` when it names a run (`init_from`)."""
    by_name = {p.stage.name: p for p in stages}
    sources = [by_name[name] for name in planned.stage.warm_start]
    external = init_from(planned.config) if planned is stages[0] else None
    if not sources and external is None:
        return None

    def init_fn(params):
        target = f"stage {planned.label}"
        if external is not None:
            params = graft(params, [external()], target=target)
        trees = [(f"stage {s.label} ({s.run_dir})", restore_params(s.run_dir, s.stage.select)) for s in sources]
        return graft(params, trees, target=target, fit=planned.stage.warm_start_fit) if trees else params
    return init_fn


def init_from(config):
    """``config.init_from`` (base config): a loader ``() -> (where, params)`` of another finished run's
    checkpoint without the ``exclude`` subtrees, or None when ``init_from.run`` is empty. ``{seed}`` in
    the run folder is ``config.seed`` (a seed sweep fine-tunes each seed from the same seed's source).
    The rest is grafted strictly: every kept subtree must match the model (`graft`)."""
    spec = config.get("init_from") if config is not None else None
    if spec is None or not spec.get("run"):
        return None
    run = str(spec.run).replace("{seed}", str(config.seed))
    exclude, select = tuple(spec.get("exclude", ())), spec.get("select", "best")

    def load():
        params = restore_params(run, select)
        unknown = sorted(set(exclude) - set(params))
        if unknown:
            raise ConfigError(f"config.init_from.exclude names {unknown}, which {run} does not have "
                              f"(its top-level parameters: {sorted(params)})")
        return f"config.init_from.run ({run}, {select})", {k: v for k, v in params.items() if k not in exclude}
    return load


def restore_params(run_dir: str, which: str = "last") -> dict:
    """Params of a finished run (host numpy arrays): its latest checkpoint (``'last'``) or its best
    one (``'best'``), through `checkpoint.read_checkpoint`."""
    return read_checkpoint(run_dir, which)[0]


def graft(params: dict, sources: list[tuple[str, dict]], *, target: str = "the model",
          fit: str = "strict") -> dict:
    """``params`` with every top-level subtree that a source holds replaced by the source's copy.

    ``sources``: ``[(where, params)]``; ``where`` names the source in errors. ``fit='strict'``: a
    source subtree the target lacks, or whose structure or shapes differ, is a `ConfigError`.
    ``fit='fitting'``: `graft_fitting` (what fits is grafted, the rest is printed and left fresh).
    """
    if fit == "fitting":
        return graft_fitting(params, sources, target=target)
    if fit != "strict":
        raise ConfigError(f"warm_start_fit={fit!r}: expected one of {list(registry.WARM_START_FITS)}")
    params = dict(params)
    for where, src in sources:
        for name, tree in src.items():
            if name not in params:
                raise ConfigError(f"{where} has parameters '{name}' that {target} lacks "
                                  f"(it has {sorted(params)})")
            # Wrapped in {name: ...}: a top-level entry may be a leaf (a model-level self.param).
            want = traverse_util.flatten_dict({name: params[name]})
            got = traverse_util.flatten_dict({name: tree})
            bad = sorted(set(want) ^ set(got)) or [k for k, v in want.items() if np.shape(got[k]) != np.shape(v)]
            if bad:
                key = "/".join(map(str, bad[0]))
                raise ConfigError(f"{where} parameters '{name}' do not match {target} at '{key}' "
                                  "(different lengths, feature sizes or model config)")
            params[name] = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, old.dtype), tree, params[name])
    return params


def graft_fitting(params: dict, sources: list[tuple[str, dict]], *, target: str = "the model",
                  verbose: bool = True) -> dict:
    """``params`` with every source layer that fits grafted in; prints the source paths it skipped.

    A layer (the leaves of one innermost module, e.g. a Dense's kernel and bias) is grafted whole when
    the target holds each of its leaves with the same shape, and skipped whole otherwise, so a bias
    never loads without its kernel. E.g. an encoder trained on 177-dim features grafted into one for
    20-dim features: its input projection stays fresh, every layer after it loads.
    """
    flat = traverse_util.flatten_dict(params)
    for where, src in sources:
        skipped: list[str] = []
        layers: dict[tuple, dict] = {}
        for path, leaf in traverse_util.flatten_dict(src).items():
            layers.setdefault(path[:-1], {})[path] = leaf
        for leaves in layers.values():
            if all(p in flat and np.shape(flat[p]) == np.shape(v) for p, v in leaves.items()):
                flat.update({p: jnp.asarray(v, flat[p].dtype) for p, v in leaves.items()})
            else:
                skipped.extend(f"{'/'.join(map(str, p))} {list(np.shape(v))}"
                               + (f" (target {list(np.shape(flat[p]))})" if p in flat else " (target lacks it)")
                               for p, v in leaves.items())
        if verbose and skipped:
            print(f"warm start of {target} from {where}: {len(skipped)} parameters do not fit and stay fresh:\n  "
                  + "\n  ".join(skipped), flush=True)
    return traverse_util.unflatten_dict(flat)
