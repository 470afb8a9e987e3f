"""Orbax checkpoints: ``<workdir>/checkpoints`` (latest, resumable) and ``<workdir>/best``.

A latest checkpoint holds the whole `TrainState` (params, optimizer state, RNG, step) and a JSON
item with the loop position (epoch, next batch of that epoch) and early-stopping state, so a
resumed run continues exactly where the saved one was. Orbax writes each step to a temporary
folder and renames it when complete, so a run killed while saving leaves the previous step
intact; a step that cannot be read is reported and the one before it is used.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpoints:
    def __init__(self, workdir: str, *, keep: int = 2):
        self.workdir = os.path.abspath(workdir)
        self._closed, self._keep = False, keep
        opts = dict(create=True, enable_async_checkpointing=False)
        self.latest = ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"),
                                            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts))
        self.best = ocp.CheckpointManager(os.path.join(self.workdir, "best"),
                                          options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

    @staticmethod
    def _replace(manager, step: int) -> None:
        # A resumed run recomputes the same step deterministically: the new save replaces the old.
        if step in manager.all_steps():
            manager.delete(step)

    def save_latest(self, state, meta: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self._replace(self.latest, step)
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)

    def save_best(self, state, meta: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self._replace(self.best, step)
        self.best.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(state.params),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

    @staticmethod
    def _restore_newest(manager, args_for) -> tuple[Any, dict] | None:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = manager.restore(step, args=args_for())
                return restored
            except Exception as e:  # truncated or corrupt step: fall back to the previous one
                aside = os.path.join(str(manager.directory), f"corrupt_step_{step}")
                log.warning("checkpoint step %d in %s is unreadable (%s: %s)", step, manager.directory,
                            type(e).__name__, e)
                print(f"warning: checkpoint step {step} in {manager.directory} is unreadable "
                      f"({type(e).__name__}); moved to {aside}, using an older one")
                os.replace(os.path.join(str(manager.directory), str(step)), aside)
                manager.reload()
        return None

    @staticmethod
    def _prune(manager, keep: int) -> None:
        # A run killed after saving a step but before Orbax deleted the oldest one leaves one step
        # too many; a run that was already done never saves again to trim it.
        for step in sorted(manager.all_steps())[:-keep] if keep > 0 else ():
            manager.delete(step)

    def restore_latest(self, abstract_state) -> tuple[Any, dict] | None:
        r = self._restore_newest(self.latest, lambda: ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        self._prune(self.latest, self._keep)
        self._prune(self.best, 1)
        return None if r is None else (r["state"], r["meta"])

    def restore_best(self, abstract_params) -> tuple[Any, dict] | None:
        r = self._restore_newest(self.best, lambda: ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()))
        return None if r is None else (r["params"], r["meta"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.latest.wait_until_finished()
        self.best.wait_until_finished()
        self.latest.close()
        self.best.close()
