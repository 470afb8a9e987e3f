"""``metrics.jsonl`` in the workdir: one JSON object per log step and per evaluation.

The same numbers go to TensorBoard event files in the workdir (tensorboardX, no TensorFlow):
``tensorboard --logdir runs/`` shows every run. Train records are tagged ``train/<name>``, evaluation
records ``<split>/<name>``. On resume the writer starts with ``purge_step`` = the checkpoint's step + 1,
so TensorBoard drops the events the interrupted run wrote after that checkpoint (as metrics.jsonl
drops its lines); a fresh run deletes the old event files.
"""
from __future__ import annotations

import glob
import json
import os
import time
import warnings
from typing import Any


def _complete(line: str) -> bool:
    """False for a last line cut short by a kill mid-write (it is dropped, the run logs it again)."""
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return line.endswith("\n")


class MetricsWriter:
    def __init__(self, workdir: str, *, resume_step: int | None = None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if resume_step is not None and os.path.exists(self.path):
            # Lines written after the checkpoint we resume from would be written again: drop them.
            with open(self.path) as f:
                keep = [line for line in f if line.strip() and _complete(line) and
                        json.loads(line).get("step", 0) <= resume_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:  # then one rename: a kill here leaves the old file or the new one
                f.writelines(keep)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)
        self._tb = _tensorboard_writer(workdir, resume_step)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None and "step" in record:
            prefix = record.get("split", "train")
            self._tb.scalars({f"{prefix}/{k}": v for k, v in record.items() if k not in ("step", "epoch", "split")
                              and isinstance(v, (int, float)) and not isinstance(v, bool)}, int(record["step"]))


class _EventFile:
    """A TensorBoard event file written synchronously: tensorboardX's record writer without its
    writer thread, whose ``flush()`` does not wait for queued events (a run killed right after a
    log step would lose it). The file name ends in nanoseconds, so a writer started within the
    same second as an earlier one (a quick resume) never truncates that one's file."""

    def __init__(self, workdir: str, purge_step: int | None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2, summary_pb2

        self._pb, self._summary = event_pb2, summary_pb2
        self._writer = EventsWriter(os.path.join(workdir, "events"), f".{time.time_ns()}")
        if purge_step is not None:  # TensorBoard discards earlier files' events with step >= purge_step
            self._write(event_pb2.Event(step=purge_step,
                                        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

    def scalars(self, values: dict[str, float], step: int) -> None:
        summary = self._summary.Summary(value=[self._summary.Summary.Value(tag=k, simple_value=float(v))
                                               for k, v in values.items()])
        self._write(self._pb.Event(step=step, summary=summary))

    def _write(self, event) -> None:
        event.wall_time = time.time()
        self._writer.write_event(event)
        self._writer.flush()


def _tensorboard_writer(workdir: str, resume_step: int | None) -> _EventFile | None:
    """The event file of this process (None, with a warning, if tensorboardX is missing)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        warnings.warn("tensorboardX is not installed: no TensorBoard event files (pip install tensorboardX)",
                      stacklevel=2)
        return None
    if resume_step is None:
        for old in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
            os.remove(old)
    return _EventFile(workdir, None if resume_step is None else resume_step + 1)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:  # a line cut short by a killed run is skipped (the resumed run rewrites it)
        return [json.loads(line) for line in f if line.strip() and _complete(line)]
