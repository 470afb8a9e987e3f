"""What train.py / eval.py share: flags, user-error reporting, the results table."""
from __future__ import annotations

import os
import re
import sys
from typing import NoReturn

from absl import flags
from ml_collections import config_flags

from mmfuse_jax.errors import ConfigError, DataError

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/<model>.py:<preset>; override fields with --config.a.b=value", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "folder for checkpoints, metrics.jsonl and eval JSON")
flags.mark_flags_as_required(["config", "workdir"])
SEEDS = flags.DEFINE_string("seeds", "", "train.py/eval.py: one run per seed under <workdir>/seed_<k>, e.g. 0,1,2 "
                            "or 0-4, then <workdir>/aggregate.{md,json} (mean ± sample std)")
PERTURB = flags.DEFINE_string("perturb", "", "eval.py: evaluate with the inputs perturbed, e.g. drop:audio or "
                              "noise:video:0.5,shuffle:audio (one evaluation; ';' separates several)")
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


VERBOSE = flags.DEFINE_bool("verbose", False, "show the full traceback of an error (or set MMFUSE_DEBUG=1)")

# Exit codes: 2 a user mistake (config, data, files), 3 a non-finite loss stopped training,
# 130 interrupted (Ctrl-C / SIGTERM; the run resumes with the same command).
EXIT_USER, EXIT_NONFINITE, EXIT_INTERRUPTED = 2, 3, 130


def debug() -> bool:
    """Tracebacks wanted (--verbose or MMFUSE_DEBUG=1)."""
    verbose = flags.FLAGS.is_parsed() and VERBOSE.value
    return bool(verbose) or os.environ.get("MMFUSE_DEBUG", "") not in ("", "0")



def fail(message: str, code: int = EXIT_USER) -> NoReturn:
    """One ``error:`` line on stderr and exit ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def init_distributed() -> bool:
    """`distributed.initialize` from the flags (first thing train.py / eval.py do); a bad setting
    is one clear line. True when this process joined a multi-process run."""
    from mmfuse_jax.training import distributed

    try:
        return distributed.initialize(DISTRIBUTED.value, coordinator_address=COORDINATOR.value,
                                      num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)
    except ConfigError as e:
        fail(str(e))


def validate_config(config) -> None:
    """`validation.validate` with the registries' names (models, formats, metric sets)."""
    from mmfuse_jax import metrics, registry, validation
    from mmfuse_jax.data.formats import FORMATS

    def metric_names(metric_set: str) -> list[str]:
        validation.check_choice("dataset.metric", metric_set, metrics.SCORERS)
        return metrics.metric_names(metric_set)

    def model_names():  # the registry imports every model (and JAX): only once the generic checks passed
        yield from registry.names()

    validation.validate(config, model_names=model_names(), formats=FORMATS, metric_names=metric_names)


def run_user_facing(fn, *, config=None) -> None:
    """Run ``fn``; a user mistake (bad data or config, a file that can't be written, Ctrl-C) prints
    one clear ``error:`` line instead of a traceback (all of it with --verbose or MMFUSE_DEBUG=1).

    With ``config``, the config is validated, then the resolved config (defaults + preset +
    --config.x overrides) is printed.
    """
    quiet_logs()
    try:
        if config is not None:
            validate_config(config)
            print("resolved config (train.py saves it as <workdir>/config.json):")
            print("  " + str(config).rstrip().replace("\n", "\n  "), flush=True)
        fn()
    except (DataError, ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as e:
        _report(e, EXIT_USER)
    except FloatingPointError as e:  # a non-finite loss stopped training; checkpoints are intact
        _report(e, EXIT_NONFINITE)
    except KeyboardInterrupt as e:  # the loop's Interrupted says where it saved
        if debug():
            raise
        fail(str(e) or "interrupted; run the same command to resume", EXIT_INTERRUPTED)


def _report(e: BaseException, code: int) -> NoReturn:
    if debug():
        raise e
    fail(str(e), code)


def _root_cause(e: BaseException) -> BaseException:
    """The innermost ConfigError/DataError in ``e``'s chain (a config file's own error, which absl
    and ml_collections wrap in errors carrying a traceback as text), else ``e``."""
    found, seen = e, e
    while seen is not None:
        if isinstance(seen, (ConfigError, DataError)):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def _flag_message(e: Exception, argv: list[str]) -> str:
    if isinstance(e, flags.UnrecognizedFlagError):
        name = getattr(e, "flagname", "") or str(e)
        return f"unknown flag --{name}{_suggest(name)}"
    key = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', str(e))
    if key:  # ml_collections: an override of a config field that does not exist
        wrong = key.group(2)
        flag = next((a.split("=")[0] for a in argv if a.split("=")[0].endswith("." + wrong)), f"--config.{wrong}")
        return f"unknown config field {flag} (did you mean {flag[:-len(wrong)]}{key.group(1)}?)"
    cause = _root_cause(e)
    if cause is not e:
        return str(cause)
    text = str(e)
    if "Failed loading config file" in text or "No such file or directory" in text:
        missing = re.search(r"No such file or directory: '([^']+)'", text)
        return f"config file {missing.group(1) if missing else text.splitlines()[0]!s} not found " \
               "(--config=configs/<model>.py:<preset>)"
    return text.splitlines()[0] if text else type(e).__name__


def _suggest(flag: str) -> str:
    """`` (did you mean --config.batch_size?)`` from the loaded config's keys or the defined flags."""
    from mmfuse_jax.training.identity import flatten
    from mmfuse_jax.validation import did_you_mean

    names = [n for n in flags.FLAGS if not n.startswith("config.")]
    try:
        config = flags.FLAGS["config"].value
        names += ["config." + k for k in flatten(config.to_dict())]
    except Exception:  # noqa: BLE001 - the config itself failed to load: suggest among flags only
        pass
    hint = did_you_mean(flag, names)
    return hint.replace("(did you mean '", "(did you mean --").replace("'?)", "?)") if hint else ""


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags parser for train.py / eval.py: ``--help`` prints the usage with every model and
    preset and exits 0; any flag mistake is one ``error:`` line and exit code 2."""
    from absl import app

    if any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
        module = sys.modules["__main__"]
        module.__doc__ = (module.__doc__ or "").rstrip() + "\n\n" + catalogue() + "\n"
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    try:
        rest = flags.FLAGS(argv)
        config = flags.FLAGS["config"].value
        if config is not None:  # a config file that failed to load raises on first use, not above
            config.to_dict()
    except Exception as e:  # noqa: BLE001 - absl wraps config-file errors in several types
        if os.environ.get("MMFUSE_DEBUG", "") not in ("", "0") or "--verbose" in argv:
            raise
        fail(_flag_message(e, argv))
    return rest


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
    """`absl.app.run(main)` with `parse_flags`: --help exits 0 and lists the models and presets; glibc's
    allocator and CPU dispatch tuned for XLA's large buffers first (`runtime.tune_host`), and the persistent
    compilation cache on once the flags are read (`runtime.compilation_cache`; not for --help)."""
    from absl import app

    from mmfuse_jax import runtime

    runtime.tune_host()

    def with_cache(argv):
        runtime.compilation_cache()
        return main(argv)

    app.run(with_cache, flags_parser=parse_flags)
