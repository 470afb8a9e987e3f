"""Defaults shared by every ``configs/<model>.py``; each preset overrides what its source says.

Intent presets (`INTENT_DATASETS`, `MINTREC2_DATASETS`: config preset -> `configs.datasets` entry):
  * ``demo``/``tiny``: the synthetic MIntRec-layout benchmark (`data/synthetic/mintrec.py`), generated on
    first use under ``data/synthetic_<preset>`` (``tiny``: a smaller copy for tests).
  * ``mintrec``: the real release under ``data/MIntRec`` and a BERT checkpoint directory under
    ``pretrained/bert-base-uncased`` (thuiar/MIntRec uses bert-base-uncased).
  * ``mintrec2``, ``demo_mintrec2``, ``tiny_mintrec2``: MIntRec2.0 (real, synthetic, synthetic for tests).
"""
from __future__ import annotations

import ml_collections

from configs import datasets
from mmfuse_jax.errors import ConfigError

INTENT_DATASETS = {"demo": "synthetic_demo", "tiny": "synthetic_tiny", "mintrec": "mintrec"}
MINTREC2_DATASETS = {"mintrec2": "mintrec2", "demo_mintrec2": "synthetic_mintrec2_demo",
                     "tiny_mintrec2": "synthetic_mintrec2_tiny"}
PRESETS = tuple(INTENT_DATASETS)
INTENT_PRESETS = PRESETS + tuple(MINTREC2_DATASETS)  # every intent preset: MIntRec and MIntRec2.0


def base_config(model_name: str, preset: str,
                dataset: ml_collections.ConfigDict | str | None = None) -> ml_collections.ConfigDict:
    """Shared defaults. ``dataset``: a ``config.dataset`` or a `configs.datasets` name (default: the
    intent dataset of ``preset``, `INTENT_DATASETS`). ``preset`` 'demo'/'tiny' also picks the small
    optimisation settings below."""
    c = ml_collections.ConfigDict()
    c.model_name = model_name
    c.preset = preset
    c.seed = 0
    if dataset is None:
        dataset = INTENT_DATASETS[parse_preset(preset, presets=PRESETS)]
    c.dataset = datasets.dataset(dataset) if isinstance(dataset, str) else dataset
    c.model = ml_collections.ConfigDict()
    c.model.pretrained_bert = True   # load config.dataset.bert_path weights into the text encoder
    c.model.dropout = 0.1
    # Ours, models with a BERT/RoBERTa text encoder: how its dropout masks are drawn, 'threefry' (flax
    # nn.Dropout, what every measured number in README used) or 'hashed' (layers/dropout.py, as KuDA's own
    # layers; other masks, so other numbers). Measured on the tiny presets (2-core CPU, the test suite's
    # XLA flags): train step text_only 24.6 -> 18.5 ms, dyken_hyena 39.0 -> 30.3 ms, mvcl_daf 272 -> 174 ms.
    c.model.bert_dropout = "threefry"
    # Optimisation (thuiar/MIntRec configs/text_bert.py: AdamW, lr 2e-5, wd 0.1, warmup 0.1,
    # batch 16, eval batch 8, <= 100 epochs, patience 8, monitor f1); demo/tiny override below.
    c.optimizer = ml_collections.ConfigDict({"lr": 2e-5, "weight_decay": 0.1, "warmup_ratio": 0.1,
                                             "grad_clip": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8})
    # Ours: how the step applies AdamW, 'per_leaf' (optax array by array, what every measured number in
    # README used) or 'grouped' (over one concatenated vector per weight-decay group, training/
    # grouped_update.py: the same arithmetic and state layout, far fewer kernels to compile; the gradients
    # may round differently in their last bits, since XLA fuses their reductions with other consumers).
    # Measured on the tiny presets (2-core CPU, the test suite's XLA flags): the train step's compile
    # kuda 5.7 -> 5.0 s, mvcl_daf 4.5 -> 3.8 s, hct_dmg 5.2 -> 4.6 s (benchmarks/step_compile.py, README there).
    c.optimizer.update = "per_leaf"
    # Ours: how a step whose loss or gradient norm is not finite keeps the old params and optimizer state:
    # 'where' (selects, AdamW's new moments before the update reads them: training/adamw.py, since 0665963;
    # and clips by one multiplication fused into the moments' passes, since 11b805c), 'cond' (optax's update,
    # its clip included, under lax.cond: a rejected step computes nothing) or 'select_after' (a select per
    # array after optax's update: 'where' before 0665963, what README's experiment tables were measured with).
    # The same values up to float rounding, which differs between them, so a run's numbers depend on the
    # choice (`make demo`: the same numbers except DyKen-Hyena's rows, README). The AdamW update of a 22.7 M
    # parameter BERT on a 2-core Intel Xeon: 29.8 ms 'where', 42.5 ms 'cond', 58 ms 'select_after'
    # (benchmarks/text_step_profile.py).
    # training/grouped_update.py, GUARDS.
    c.optimizer.guard = "where"
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_epochs = 100
    c.patience = 8
    c.early_stop_metric = "f1"
    c.early_stop_mode = "max"      # 'min' for errors such as mae
    c.nonfinite_policy = "stop"    # a non-finite loss/gradient: 'stop' the run, or 'skip' the step
    c.checkpoint_every_steps = 0   # 0: only at the end of each epoch
    c.keep_checkpoints = 2
    # Ours: start the first training stage from another finished run's params (fine-tuning on a second
    # dataset, training/stages.py): run = the folder holding its checkpoints ('{seed}' -> config.seed),
    # select = its 'best' or 'last' checkpoint, exclude = top-level param subtrees left fresh (e.g. a new
    # label set's 'classifier'); every other subtree must match the model exactly. '' = a fresh start.
    c.init_from = ml_collections.ConfigDict({"run": "", "select": "best", "exclude": ()})
    c.log_every = 10
    c.num_threads = 2              # grain read-ahead threads
    # Decoded examples kept in host memory after their first read (MB; 0 = off): from the second
    # epoch on, a batch is only padded, not decoded again (decoding is ~0.2 ms per example).
    c.loader_cache_mb = 2048
    c.compute_dtype = "float32"
    # Ours: XLA compiler options for the train and eval steps (jax.jit's compiler_options) as
    # 'name=value,...', e.g. --config.compiler_options=xla_backend_optimization_level=1; '' = JAX's
    # defaults. A trade of compile time for step time (the test suite compiles its short runs fast and
    # its longer ones with this, tests/conftest.py); options can change float rounding, not the model,
    # so a run may resume with others.
    c.compiler_options = ""
    # The device mesh (training/sharding.py): ('data', 'model') over every device of every host.
    # model = M > 1 splits each param of >= min_shard_size elements (and its Adam moments) over M
    # devices (FSDP-style), for a model that outgrows one device; the batch is split over the rest.
    # devices = N > 0 uses only the first N devices of this host (one host; 0: all of them).
    c.mesh = ml_collections.ConfigDict({"model": 1, "min_shard_size": 2 ** 18, "devices": 0})
    if preset in ("demo", "tiny"):
        c.optimizer.lr = 1e-3 if preset == "demo" else 3e-3  # tuned on the synthetic benchmark
        c.optimizer.weight_decay = 0.01
        c.batch_size = c.eval_batch_size = 32
        c.num_epochs = 12
        c.patience = 5
        c.early_stop_metric = "acc"
        c.log_every = 5
    if preset == "tiny":  # the test suite's runs: the hashed masks' and the grouped update's faster compiles
        c.model.bert_dropout = "hashed"
        c.optimizer.update = "grouped"
    return c


def parse_preset(arg: str | None, default: str = "demo", presets: tuple[str, ...] = PRESETS) -> str:
    preset = arg or default
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}: expected one of {list(presets)}")
    return preset


def intent_config(model_name: str, preset: str) -> ml_collections.ConfigDict:
    """base_config for an intent preset (`INTENT_PRESETS`): a MIntRec2.0 preset takes the
    optimisation of its MIntRec counterpart (mintrec2 -> mintrec, demo_mintrec2 -> demo, ...)."""
    if preset not in MINTREC2_DATASETS:
        return base_config(model_name, preset)
    recipe = {"mintrec2": "mintrec", "demo_mintrec2": "demo", "tiny_mintrec2": "tiny"}[preset]
    c = base_config(model_name, recipe, MINTREC2_DATASETS[preset])
    c.preset = preset
    return c

