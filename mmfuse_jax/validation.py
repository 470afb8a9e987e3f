"""Config validation in one place: types, ranges, choices and cross-field rules, checked before any work.

`validate(config)` raises one `ConfigError` naming the flag (``config.batch_size``), what was
given and what is expected, with a "did you mean" for a misspelt choice. The device-dependent
rule (batch divisible by the mesh's data axis) stays with the mesh (`training.sharding`).
"""
from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from mmfuse_jax.errors import ConfigError


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``''``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = sorted(choices)
    if value not in choices:
        raise ConfigError(f"config.{name}={value!r}: expected one of {choices}{did_you_mean(value, choices)}")


def _check_number(name: str, value: Any, *, integer: bool, ok: Callable[[float], bool], rule: str) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"config.{name}={value!r}: expected {'an integer' if integer else 'a number'} {rule}")
    if not ok(value):
        raise ConfigError(f"config.{name}={value!r}: expected {'an integer' if integer else 'a number'} {rule}")


# (field, integer?, predicate, rule text): the numeric fields every config has.
_NUMBERS = (
    ("batch_size", True, lambda v: v >= 1, ">= 1"),
    ("eval_batch_size", True, lambda v: v >= 1, ">= 1"),
    ("num_epochs", True, lambda v: v >= 1, ">= 1"),
    ("patience", True, lambda v: v >= 1, ">= 1"),
    ("log_every", True, lambda v: v >= 1, ">= 1"),
    ("checkpoint_every_steps", True, lambda v: v >= 0, ">= 0 (0: at the end of each epoch only)"),
    ("keep_checkpoints", True, lambda v: v >= 1, ">= 1"),
    ("seed", True, lambda v: v >= 0, ">= 0"),
    ("num_threads", True, lambda v: v >= 1, ">= 1"),
    ("loader_cache_mb", True, lambda v: v >= 0, ">= 0 (0: off)"),
    ("optimizer.lr", False, lambda v: v > 0, "> 0"),
    ("optimizer.weight_decay", False, lambda v: v >= 0, ">= 0"),
    ("optimizer.warmup_ratio", False, lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.grad_clip", False, lambda v: v >= 0, ">= 0 (0: off)"),
    ("mesh.model", True, lambda v: v >= 1, ">= 1"),
    ("mesh.devices", True, lambda v: v >= 0, ">= 0 (0: every device)"),
    ("dataset.num_buckets", True, lambda v: 1 <= v <= 4, "in 1..4 (each bucket is one compiled shape)"),
)

_CHOICES = (
    ("compute_dtype", ("float32", "bfloat16")),
    ("nonfinite_policy", ("stop", "skip")),
    ("early_stop_mode", ("max", "min")),
    ("dataset.task", ("classification", "regression")),
    ("dataset.nonfinite", ("error", "zero")),
    ("dataset.buckets", ("fixed", "auto")),
    ("model.bert_dropout", ("threefry", "hashed")),  # encoders.bert.DROPOUT_IMPLS
    ("optimizer.update", ("per_leaf", "grouped")),    # training.grouped_update.UPDATES
    ("optimizer.guard", ("where", "cond", "select_after")),           # training.grouped_update.GUARDS
)


def parse_compiler_options(text: str) -> dict[str, Any]:
    """``config.compiler_options`` ('name=value,...': XLA option names, values as Python literals or
    words) -> the dict jax.jit's compiler_options takes ({} for '')."""
    import ast

    if not isinstance(text, str):
        raise ConfigError(f"config.compiler_options={text!r}: expected a string 'name=value,...' "
                          "(e.g. 'xla_backend_optimization_level=1'), or '' for JAX's defaults")
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name.startswith("xla_"):
            raise ConfigError(f"config.compiler_options: {item!r}: expected name=value with an XLA option name "
                              "(xla_...), e.g. 'xla_backend_optimization_level=1'")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value  # a word (an enum value)
    return out


def _get(config, dotted: str) -> tuple[bool, Any]:
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "get") or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate(config, *, model_names: Iterable[str] = (), formats: Iterable[str] = (),
             metric_names: Callable[[str], list[str]] | None = None) -> None:
    """Check ``config``; the registries' names are passed in (this module sits below them)."""
    for name, integer, ok, rule in _NUMBERS:
        present, value = _get(config, name)
        if present:
            _check_number(name, value, integer=integer, ok=ok, rule=rule)
    for name, choices in _CHOICES:
        present, value = _get(config, name)
        if present:
            check_choice(name, value, choices)
    present, options = _get(config, "compiler_options")
    if present:
        parse_compiler_options(options)
    model_names, formats = list(model_names), list(formats)
    if model_names:
        check_choice("model_name", config.model_name, model_names)
    if formats:
        check_choice("dataset.format", config.dataset.format, formats)
    if metric_names is not None:
        metric_set = config.get("metric") or config.dataset.get("metric", "classification")
        check_choice("early_stop_metric", config.early_stop_metric, metric_names(metric_set))
