"""KuDA's two training stages, each an ordinary run of the shared loop (`training.loop`).

    <workdir>/stage1_text, stage1_video, stage1_audio   one modality's encoder + decoder on its
                                                        unimodal label (official pretrain.py, T, V, A)
    <workdir>/stage2                                    the whole model, initialised from the stage-1
                                                        runs, adapters and decoders frozen (train.py)

Every stage is resumable (the loop resumes each run from its own workdir); a finished stage is not
trained again. Stage-1 weights are taken from the last epoch (``stage1.select='last'``, what
pretrain.py saves) or the best dev epoch (``'best'``). ``stage1.enabled=False`` trains stage 2 from
scratch with nothing frozen (the "w/o knowledge injection" ablation).

CLI: python -m mmfuse_jax.models.kuda_stages --config=configs/kuda.py:sims --workdir=runs/kuda [--eval]
"""
from __future__ import annotations

import copy
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmfuse_jax import metrics as metrics_lib
from mmfuse_jax.errors import ConfigError, DataError

MODALITIES = ("text", "video", "audio")  # pretrain.py order
# OverallModal.preprocess_model: requires_grad=False for names containing 'adapter' or 'decoder'.
FROZEN = (r"^(text|video|audio)_encoder/adapter_\d+/", r"^(text|video|audio)_decoder/")


def stage_configs(config) -> list[tuple[str, Any]]:
    """``[(run name, config)]`` in training order: stage-1 runs (if enabled), then stage 2."""
    s1, runs = config.stage1, []
    if s1.target not in ("unimodal", "multimodal"):
        raise ConfigError(f"config.stage1.target={s1.target!r}: expected 'unimodal' or 'multimodal'")
    if s1.enabled:
        for m in MODALITIES:
            c = copy.deepcopy(config)
            c.model.update({"stage": 1, "modality": m, "target": s1.target})
            c.num_epochs = c.patience = int(s1.epochs[m])
            c.optimizer.update({"lr": s1.lr, "weight_decay": s1.weight_decay, "frozen": ()})
            unimodal_metric = f"{config.dataset.metric}_{m}"
            if s1.target == "unimodal" and unimodal_metric in metrics_lib.SCORERS:
                c.metric = unimodal_metric  # score u_m against label_<m> (config.dataset unchanged)
            runs.append((f"stage1_{m}", c))
    c = copy.deepcopy(config)
    c.model.stage = 2
    c.optimizer.frozen = FROZEN if (s1.enabled and s1.freeze) else ()
    runs.append(("stage2", c))
    return runs


def restore_params(workdir: str, which: str = "last") -> dict:
    """Params of a finished run: its latest checkpoint (``'last'``) or its best one (``'best'``)."""
    import orbax.checkpoint as ocp

    if which not in ("last", "best"):
        raise ConfigError(f"config.stage1.select={which!r}: expected 'last' or 'best'")
    folder = os.path.join(os.path.abspath(workdir), "checkpoints" if which == "last" else "best")
    if not os.path.isdir(folder):
        raise DataError(folder, None, "the checkpoints of a finished stage-1 run", "no such folder")
    manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=False))
    try:
        step = manager.latest_step()
        if step is None:
            raise DataError(folder, None, "at least one checkpoint", "none")
        item = "state" if which == "last" else "params"
        restored = manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore()}))[item]
    finally:
        manager.close()
    return restored["params"] if which == "last" else restored


def graft(params: dict, sources: list[dict], *, where: str = "stage 1") -> dict:
    """``params`` with every top-level subtree that a source holds replaced by the source's copy."""
    params = dict(params)
    for src in sources:
        for name, tree in src.items():
            if name not in params:
                raise ConfigError(f"{where} has parameters '{name}' that the stage-2 model lacks")
            want = traverse_util.flatten_dict(params[name])
            got = traverse_util.flatten_dict(tree)
            if set(want) != set(got) or any(np.shape(got[k]) != np.shape(v) for k, v in want.items()):
                raise ConfigError(f"{where} parameters '{name}' do not match the stage-2 model "
                                  "(different lengths, feature sizes or model config)")
            params[name] = jax.tree_util.tree_map(lambda new, old: jnp.asarray(new, old.dtype), tree, params[name])
    return params


def train(config, workdir: str) -> dict[str, Any]:
    """Run every stage of ``config`` under ``workdir``; returns ``{run name: loop result}``."""
    from mmfuse_jax.data import synthetic_mmsa
    from mmfuse_jax.training import loop

    synthetic_mmsa.ensure(config.dataset)
    results, stage1_dirs = {}, []
    for name, c in stage_configs(config):
        run_dir = os.path.join(workdir, name)
        init_fn = None
        if name == "stage2" and stage1_dirs:
            select = config.stage1.select

            def init_fn(params, dirs=tuple(stage1_dirs), select=select):
                return graft(params, [restore_params(d, select) for d in dirs])
        print(f"\n=== KuDA {name} -> {run_dir}")
        results[name] = loop.train_and_evaluate(c, run_dir, init_fn=init_fn)
        if name.startswith("stage1"):
            stage1_dirs.append(run_dir)
    return results


def evaluate(config, workdir: str) -> dict[str, dict[str, float]]:
    """Dev and test metrics of the stage-2 best checkpoint."""
    from mmfuse_jax.training import loop

    return loop.evaluate(stage_configs(config)[-1][1], os.path.join(workdir, "stage2"))


def main(argv) -> None:
    from mmfuse_jax import cli
    from mmfuse_jax.training import loop

    config, workdir = cli.CONFIG.value, cli.WORKDIR.value

    def run():
        if not EVAL_ONLY.value:
            train(config, workdir)
        res = evaluate(config, workdir)
        print(loop.format_table(res, f"kuda ({config.model.ratio_mode} ratio) on {config.dataset.name} (x100)"))

    cli.run_user_facing(run)


if __name__ == "__main__":
    from absl import app, flags

    EVAL_ONLY = flags.DEFINE_bool("eval", False, "only evaluate the stage-2 best checkpoint")
    app.run(main)
