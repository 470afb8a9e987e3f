"""Config validation: every rule names the flag, the value and what is expected."""
import ml_collections
import pytest
from conftest import set_fields

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.validation import did_you_mean, validate


def _config(**over):
    c = ml_collections.ConfigDict({
        "model_name": "early_fusion", "batch_size": 8, "eval_batch_size": 8, "num_epochs": 2, "patience": 1,
        "log_every": 5, "checkpoint_every_steps": 0, "keep_checkpoints": 2, "seed": 0, "num_threads": 2,
        "loader_cache_mb": 0, "compute_dtype": "float32", "nonfinite_policy": "stop", "early_stop_mode": "max",
        "early_stop_metric": "acc",
        "optimizer": {"lr": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.1, "grad_clip": 1.0, "update": "per_leaf"},
        "mesh": {"model": 1, "devices": 0}, "model": {"bert_dropout": "threefry"},
        "dataset": {"format": "mintrec", "task": "classification", "nonfinite": "error", "num_buckets": 4,
                    "metric": "classification"},
    })
    return set_fields(c, **over)


def _check(c):
    validate(c, model_names=["early_fusion", "text_only"], formats=["mintrec", "mmsa"],
             metric_names=lambda s: ["acc", "f1"])


def test_valid_config_passes():
    _check(_config())


@pytest.mark.parametrize("key,value,expect", [
    ("batch_size", -4, "config.batch_size=-4: expected an integer >= 1"),
    ("batch_size", 0, "config.batch_size=0"),
    ("num_epochs", 0, "config.num_epochs=0: expected an integer >= 1"),
    ("optimizer.lr", -0.01, "config.optimizer.lr=-0.01: expected a number > 0"),
    ("optimizer.warmup_ratio", 1.0, "in [0, 1)"),
    ("dataset.num_buckets", 9, "in 1..4"),
    ("compute_dtype", "bfloat61", "did you mean 'bfloat16'?"),
    ("model_name", "early_fusoin", "did you mean 'early_fusion'?"),
    ("dataset.format", "mmssa", "did you mean 'mmsa'?"),
    ("early_stop_metric", "f2", "config.early_stop_metric='f2': expected one of ['acc', 'f1']"),
    ("batch_size", True, "expected an integer"),
    ("compiler_options", "backend_optimization_level=1", "expected name=value with an XLA option name (xla_...)"),
    ("compiler_options", "xla_backend_optimization_level", "expected name=value"),
    ("compiler_options", 1, "config.compiler_options=1: expected a string 'name=value,...'"),
    ("model.bert_dropout", "hash", "did you mean 'hashed'?"),
    ("optimizer.update", "group", "did you mean 'grouped'?"),
    ("mesh.devices", -1, "config.mesh.devices=-1: expected an integer >= 0 (0: every device)"),
])
def test_bad_values_name_the_flag(key, value, expect):
    with pytest.raises(ConfigError) as e:
        _check(_config(**{key: value}))
    assert expect in str(e.value)


def test_did_you_mean():
    assert did_you_mean("batchsize", ["batch_size", "seed"]) == " (did you mean 'batch_size'?)"
    assert did_you_mean("zzz", ["batch_size"]) == ""
