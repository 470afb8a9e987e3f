"""Orbax checkpoints: ``<workdir>/checkpoints`` (latest, resumable) and ``<workdir>/best``.

A latest checkpoint holds the whole `TrainState` (params, optimizer state, RNG, step) and a JSON
item with the loop position (epoch, next batch of that epoch) and early-stopping state, so a
resumed run continues exactly where the saved one was. Orbax writes each step to a temporary
folder and renames it when complete, so a run killed while saving leaves the previous step
intact; a step that cannot be read is reported and the one before it is used.

``async_save=True`` (what training uses): a save returns once the arrays are copied to host memory (`_host_copy`)
and the files are written in the background while training goes on; the next save, `close` and
`wait` wait for it, so a step is never read before it is whole, and a process killed mid-write
leaves only Orbax's temporary folder (ignored on restore) beside the previous complete step.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmfuse_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class Checkpoints:
    def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = False):
        self.workdir = os.path.abspath(workdir)
        self._closed, self._keep = False, keep
        opts = {"create": True, "enable_async_checkpointing": async_save}
        self.latest = ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"),
                                            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts))
        self.best = ocp.CheckpointManager(os.path.join(self.workdir, "best"),
                                          options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

    @staticmethod
    def _replace(manager, step: int) -> None:
        # A resumed run recomputes the same step deterministically: the new save replaces the old.
        manager.wait_until_finished()  # the previous save is whole before the folder is changed
        if step in manager.all_steps():
            manager.delete(step)

    def save_latest(self, state, meta: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self._replace(self.latest, step)
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_host_copy(state)),
                                                       meta=ocp.args.JsonSave(meta)), force=True)

    def save_best(self, state, meta: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self._replace(self.best, step)
        self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(_host_copy(state.params)),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

    @staticmethod
    def _restore_newest(manager, item: str, abstract) -> dict | None:
        """``{item: arrays laid out as abstract's shardings, 'meta': dict}`` of the newest step that restores."""
        host = jax.process_count() == 1  # the `_host_copy` of a save, the other way round
        target = jax.tree_util.tree_map(lambda a: np.empty(a.shape, a.dtype), abstract) if host else abstract
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = manager.restore(step, args=ocp.args.Composite(
                    **{item: ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}))
                if host:
                    arrays = _fits(restored[item], abstract)
                    restored = {**restored, item: jax.device_put(arrays, jax.tree_util.tree_map(
                        lambda a: a.sharding, abstract))}
                return restored
            except Exception as e:  # noqa: BLE001 - whatever Orbax raises; sorted out below
                _set_aside_if_corrupt(manager, step, e)
        return None

    @staticmethod
    def _prune(manager, keep: int) -> None:
        # A run killed after saving a step but before Orbax deleted the oldest one leaves one step
        # too many; a run that was already done never saves again to trim it.
        for step in sorted(manager.all_steps())[:-keep] if keep > 0 else ():
            manager.delete(step)

    def restore_latest(self, abstract_state) -> tuple[Any, dict] | None:
        r = self._restore_newest(self.latest, "state", abstract_state)
        self._prune(self.latest, self._keep)
        self._prune(self.best, 1)
        return None if r is None else (r["state"], r["meta"])

    def restore_best(self, abstract_params) -> tuple[Any, dict] | None:
        r = self._restore_newest(self.best, "params", abstract_params)
        return None if r is None else (r["params"], r["meta"])

    def wait(self) -> None:
        """Until every save started so far is completely on disk."""
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wait()
        self.latest.close()
        self.best.close()


def _host_copy(tree: Any) -> Any:
    """What a save hands Orbax: a host (numpy) copy of ``tree`` when this process holds every array whole
    (one process), else ``tree`` itself (each process writes its own shards).

    The bytes on disk and what a restore gives back (arrays with the target's shardings) are the same
    either way; the host copy is much cheaper. Orbax splits the writing of a replicated `jax.Array` among
    its replicas through a jitted slice per shape and device, compiled on the first save of each process
    (624 compiles, 11 s for a 395-leaf state on 4 CPU devices), and about 0.25 s blocking + 0.5 s in the
    background per save after that; the same state from numpy: about 0.05 s + 0.15 s (measured 2026-12-05,
    2-core CPU). The copy is a real copy: the train step donates the state's buffers, which on CPU a zero-copy
    view would share while the background write reads them."""
    leaves = jax.tree_util.tree_leaves(tree)
    if jax.process_count() > 1 or not all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return tree
    return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def _fits(restored: Any, abstract: Any) -> Any:
    """``restored`` (host arrays) if its tree and shapes are ``abstract``'s, else ValueError (Orbax checks
    them itself only for `jax.Array` targets; dtypes it casts to the target's either way). A restore to
    host (numpy targets, then one `jax.device_put`) costs 0.15 s instead of 0.4 s for a 395-leaf state
    (2-core CPU, 2026-12-05)."""
    if jax.tree_util.tree_structure(restored) != jax.tree_util.tree_structure(abstract):
        raise ValueError(f"saved tree {jax.tree_util.tree_structure(restored)} is not the model's "
                         f"{jax.tree_util.tree_structure(abstract)}")
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree_util.tree_leaves(abstract)):
        if np.shape(got) != tuple(want.shape):
            raise ValueError(f"{jax.tree_util.keystr(path)}: saved shape {list(np.shape(got))}, "
                             f"the model's {list(want.shape)}")
    return restored


def _set_aside_if_corrupt(manager, step: int, error: Exception) -> None:
    """A step that failed to restore: if its bytes read back without the model (a structure or
    shape mismatch: another model or config), stop with a clear error and touch nothing; if they
    don't (truncated, corrupt), move the step aside under a new name, say how to undo it, and let
    the caller fall back to the previous step."""
    folder = str(manager.directory)
    path = os.path.join(folder, str(step))
    if _readable(path):
        raise ConfigError(f"checkpoint step {step} in {folder} does not fit this config's model "
                          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): "
                          "the run holds another model; use its own config or a new --workdir") from None
    aside, n = os.path.join(folder, f"corrupt_step_{step}"), 1
    while os.path.exists(aside):  # never collide with an earlier one
        aside, n = os.path.join(folder, f"corrupt_step_{step}.{n}"), n + 1
    log.warning("checkpoint step %d in %s is unreadable (%s: %s)", step, folder, type(error).__name__, error)
    os.replace(path, aside)
    print(f"warning: checkpoint step {step} in {folder} is unreadable ({type(error).__name__}); moved to "
          f"{aside} and using an older one (to undo: mv {aside} {path})")
    manager.reload()


def _readable(step_path: str) -> bool:
    """Whether every item of a saved step reads back as plain arrays / JSON (no model needed)."""
    if not os.path.isdir(step_path):
        return False
    items = [d for d in os.listdir(step_path) if os.path.isdir(os.path.join(step_path, d)) and d != "meta"]
    try:
        for item in items:
            _restore_numpy(os.path.join(step_path, item))
        with open(os.path.join(step_path, "meta", "metadata")) as f:
            json.load(f)
    except Exception:  # noqa: BLE001 - unreadable in any way
        return False
    return bool(items)


def _restore_numpy(path: str) -> Any:
    checkpointer = ocp.StandardCheckpointer()
    try:
        meta_tree = checkpointer.metadata(path)
        tree = getattr(meta_tree, "item_metadata", None) or meta_tree
        tree = getattr(tree, "tree", tree)
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return ocp.PyTreeCheckpointer().restore(path, restore_args=restore_args)
    finally:
        checkpointer.close()


# ------------------------------------------------------------------------------------- reading

_FOLDERS = {"last": "checkpoints", "best": "best"}


def checkpoint_steps(run_dir: str, which: str = "last") -> list[int]:
    """The saved steps of a run's latest (``'last'``) or best (``'best'``) checkpoints, ascending."""
    folder = _folder(run_dir, which)
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def read_checkpoint(run_dir: str, which: str = "best", step: int | None = None) -> tuple[dict, dict]:
    """(params, meta) of a run's checkpoint as host numpy arrays, without building the model.

    ``which``: ``'best'`` (``<run_dir>/best``) or ``'last'`` (``<run_dir>/checkpoints``); ``step``:
    a saved step (default the newest). For analyses, warm starts and parameter counts; training
    restores through `Checkpoints`, which also checks shapes against the model.
    """
    folder = _folder(run_dir, which)
    steps = checkpoint_steps(run_dir, which)
    if not steps:
        raise DataError(folder, None, "at least one saved checkpoint (train first)", "none")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise DataError(folder, None, f"a checkpoint at step {step}", f"steps {steps}")
    item = "state" if which == "last" else "params"
    path = os.path.join(folder, str(step))
    try:
        restored = _restore_numpy(os.path.join(path, item))
        with open(os.path.join(path, "meta", "metadata")) as f:
            meta = json.load(f)
    except Exception as e:  # noqa: BLE001 - unreadable bytes, whatever Orbax raises
        raise DataError(path, item, "a readable Orbax checkpoint", f"{type(e).__name__}: {e}") from None
    params = restored["params"] if which == "last" else restored
    return params, meta


def _folder(run_dir: str, which: str) -> str:
    if which not in _FOLDERS:
        raise ConfigError(f"checkpoint selection {which!r}: expected one of {sorted(_FOLDERS)}")
    return os.path.join(os.path.abspath(run_dir), _FOLDERS[which])
