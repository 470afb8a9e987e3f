"""What train.py / eval.py share: flags, user-error reporting, the results table."""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from mmfuse_jax.errors import ConfigError, DataError

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/<model>.py:<preset>; override fields with --config.a.b=value", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "folder for checkpoints, metrics.jsonl and eval JSON")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-host runs (training/distributed.py): the same command on every host, one process id each.
DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "env", ["env", "auto", "off"],
    "env: join the cluster given by --coordinator_address (or $MMFUSE_COORDINATOR), else one process; "
    "auto: let jax.distributed detect it (Cloud TPU, SLURM, Open MPI, Kubernetes); off: one process")
COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                  "host:port of process 0's coordinator (env MMFUSE_COORDINATOR)")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes (env MMFUSE_NUM_PROCESSES)")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's id, 0..num_processes-1 "
                                  "(env MMFUSE_PROCESS_ID)")


def quiet_logs() -> None:
    """Keep library INFO chatter (Orbax, TFDS, absl) out of the console; warnings still show."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def init_distributed() -> bool:
    """`distributed.initialize` from the flags (first thing train.py / eval.py do); a bad setting
    is one clear line. True when this process joined a multi-process run."""
    from mmfuse_jax.training import distributed

    try:
        return distributed.initialize(DISTRIBUTED.value, coordinator_address=COORDINATOR.value,
                                      num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run_user_facing(fn, *, config=None) -> None:
    """Run ``fn``; a user mistake (bad data or config) prints one clear line instead of a traceback.

    With ``config``, the resolved config (defaults + preset + --config.x overrides) is printed first.
    """
    quiet_logs()
    if config is not None:
        print("resolved config (train.py saves it as <workdir>/config.json):")
        print("  " + str(config).rstrip().replace("\n", "\n  "), flush=True)
    try:
        fn()
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # a non-finite loss stopped training; checkpoints are intact
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


# ------------------------------------------------------------------------------- --help

_HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull", "-?")
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def config_presets(model: str) -> list[str] | None:
    """The presets ``configs/<model>.py`` declares in ``PRESETS`` (None without that file; [] when
    the file declares none)."""
    import importlib.util

    path = os.path.join(CONFIGS_DIR, f"{model}.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"_configs_{model}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(getattr(mod, "PRESETS", ()))


def catalogue() -> str:
    """Every registered model with its config file's presets (for --help)."""
    from mmfuse_jax import registry

    lines = ["Models and presets (--config=configs/<model>.py:<preset>):"]
    names = registry.names()
    width = max(len(n) for n in names) + 2
    for name in names:
        presets = config_presets(name)
        text = ", ".join(presets) if presets else ("(no configs/ file)" if presets is None else "(see the file)")
        lines.append(f"  {name:<{width}}{text}")
    return "\n".join(lines)


def run_app(main) -> None:
    """`absl.app.run(main)`; ``--help`` also lists the models and their presets."""
    from absl import app

    if any(a.split("=")[0] in _HELP_FLAGS for a in sys.argv[1:]):
        module = sys.modules["__main__"]
        module.__doc__ = (module.__doc__ or "").rstrip() + "\n\n" + catalogue() + "\n"
    app.run(main)
