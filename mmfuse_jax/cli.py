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


def quiet_logs() -> None:
    """Keep library INFO chatter (Orbax, TFDS, absl) out of the console; warnings still show."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def run_user_facing(fn) -> None:
    """Run ``fn``; a user mistake (bad data or config) prints one clear line instead of a traceback."""
    quiet_logs()
    try:
        fn()
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
