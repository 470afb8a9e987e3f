"""The experiment of a config: its model, mesh, labels and data loaders; sharded init; predictions
and scores of a split. Shared by training (`loop`), evaluation (`evaluation`) and the `Predictor`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from tqdm.auto import tqdm

from mmfuse_jax import metrics as metrics_lib
from mmfuse_jax import registry
from mmfuse_jax.batch import UNIMODAL_LABELS
from mmfuse_jax.data import ensure_dataset, pipeline
from mmfuse_jax.data.formats import FORMATS
from mmfuse_jax.encoders import bert as bert_lib
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import distributed, init_pieces, sharding
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ------------------------------------------------------------------------------------- setup

@dataclasses.dataclass
class Experiment:
    config: Any
    spec: registry.ModelSpec
    model: Any
    prepared: pipeline.Prepared
    mesh: Any
    labels: tuple[str, ...]
    compute_dtype: Any

    def loader(self, split: str, *, train: bool) -> pipeline.Loader:
        c, ds = self.config, self.config.dataset
        host, hosts = sharding.data_slice(self.mesh)  # this host's slice of every global batch
        return pipeline.Loader(self.prepared, split, batch_size=c.batch_size if train else c.eval_batch_size,
                               max_len=ds.max_len, dims=ds.feat_dims, num_buckets=ds.num_buckets,
                               shuffle=train, seed=c.seed, label_dtype=self.label_dtype,
                               process_index=host, process_count=hosts,
                               num_threads=c.num_threads, cache_mb=c.get("loader_cache_mb", 0),
                               buckets=ds.get("buckets", "fixed"))

    def shardings(self, tree: Any) -> Any:
        """The layout of params / a TrainState (or their shapes) on the mesh: replicated, or split
        on the ``model`` axis (config.mesh)."""
        return sharding.tree_shardings(tree, self.mesh, sharding.min_shard_size(self.config))

    def specialised(self, params: Any, frozen: tuple[str, ...] | None = None, verbose: bool = False) -> Experiment:
        """This experiment with its model specialised (`registry.ModelSpec.specialise`) on the params that
        stay as they are while its programs run: those matching a stage's ``frozen`` regexes
        (`state.frozen_regex`, as the optimizer matches them), or every param (``None``: evaluation, prediction).
        ``verbose``: print the model fields the specialisation changed, if any."""
        if self.spec.specialise is None or frozen == ():
            return self
        flat = traverse_util.flatten_dict(params, sep="/")
        regex = state_lib.frozen_regex(frozen) if frozen is not None else None

        def fixed(path: str):
            if path not in flat or (regex is not None and not regex.search(path)):
                return None
            x = flat[path]  # a replicated (or host) array: its values; a multi-host shard: not known here
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                return np.asarray(x.addressable_data(0)) if x.is_fully_replicated else None
            return np.asarray(x)
        model = self.spec.specialise(self.model, fixed)
        if model is self.model:
            return self
        if verbose:
            changed = [f"model.{f.name}={getattr(model, f.name)!r}" for f in dataclasses.fields(model)
                       if f.name not in ("parent", "name")
                       and repr(getattr(model, f.name)) != repr(getattr(self.model, f.name))]
            print(f"{self.spec.name}: programs specialised on the params that stay fixed: {', '.join(changed)}",
                  flush=True)
        return dataclasses.replace(self, model=model)

    @property
    def label_dtype(self):
        return np.float32 if self.config.dataset.task == "regression" else np.int32

    def dummy_batch(self) -> dict[str, np.ndarray]:
        ds = self.config.dataset
        lens = pipeline.bucket_lengths(dict(ds.max_len), ds.num_buckets)[-1]
        return pipeline.collate([], batch_size=self.mesh.size, lens=lens, dims=dict(ds.feat_dims))


def build(config, *, data: bool = True) -> Experiment:
    """The model, mesh and labels of ``config``; ``data=False`` skips preparing the dataset (the
    `Predictor` needs only the config, the BERT config and the labels; `Experiment.loader` then fails)."""
    if config.compute_dtype not in _DTYPES:
        raise ConfigError(f"config.compute_dtype={config.compute_dtype!r}: expected one of {list(_DTYPES)}")
    spec = registry.get(config.model_name)
    if data:  # multi-host: process 0 writes/prepares the data first, the others then reuse it
        distributed.primary_first(lambda: ensure_dataset(config.dataset), "ensure_dataset")
    if config.dataset.format not in FORMATS:
        raise ConfigError(f"config.dataset.format={config.dataset.format!r}: expected one of {sorted(FORMATS)}")
    # A reader's `labels` read option (a MIntRec-layout folder with its own classes) overrides its LABELS.
    labels = tuple(config.dataset.get("read_options", {}).get("labels", ()) or FORMATS[config.dataset.format].LABELS)
    prepared = distributed.primary_first(lambda: pipeline.Prepared.open(config.dataset), "prepare") \
        if data else None
    bert_cfg = bert_lib.BertConfig.from_json(os.path.join(config.dataset.bert_path, "config.json")) \
        if spec.uses_bert else None
    if bert_cfg is not None:  # config.model.bert_dropout: how the text encoder draws its dropout masks
        bert_cfg = dataclasses.replace(bert_cfg, dropout_impl=config.model.get("bert_dropout", "threefry"))
    model = spec.build(config.model, {"num_classes": len(labels), "bert": bert_cfg})
    mesh = sharding.mesh_from_config(config)
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    return Experiment(config, spec, model, prepared, mesh, labels, _DTYPES[config.compute_dtype])


def _init_args(exp: Experiment) -> tuple[jax.Array, dict]:
    """The init's key (from the seed) and a dummy batch (its shapes are all the init reads)."""
    key = jax.random.fold_in(jax.random.PRNGKey(exp.config.seed), 0)
    return key, {k: jnp.asarray(v) for k, v in exp.dummy_batch().items()}


def _init_key(exp: Experiment, batch: dict) -> tuple:
    """What fixes the init's program (`step_lib.memo`): the model, whether it loads a BERT and the batch's
    shapes and dtypes."""
    return exp.model, _loads_bert(exp), tuple((k, v.shape, v.dtype.name) for k, v in sorted(batch.items()))


def _loads_bert(exp: Experiment) -> bool:
    """Whether a pretrained BERT replaces the init's ``params['bert']`` (config.model.pretrained_bert)."""
    return bool(exp.spec.uses_bert and exp.config.model.get("pretrained_bert", False))


def _init_fn(model, loads_bert: bool):
    """The model's init. With ``loads_bert`` it returns ``params['bert']`` as None (the checkpoint's
    weights replace it), so no random BERT is computed (jitted whole, a tiny BERT model's init compiled in
    ~1 s less: text_only 1.09 -> 0.12 s, KuDA 8.1 -> 6.9 s). Every other parameter is unchanged: each is
    drawn from its own key (its path)."""
    def init(key, batch):
        params = model.init(key, batch, train=False)["params"]
        return {**params, "bert": None} if loads_bert and "bert" in params else params

    return init


def _init_jaxpr(exp: Experiment, key, batch) -> tuple[Any, Any]:
    """(the init's jaxpr, its output shapes), traced once per model in the process (`step_lib.memo`):
    the shapes of `abstract_params` and the values of `init_params` come from one trace."""
    return step_lib.memo(("init jaxpr", *_init_key(exp, batch)), lambda: jax.make_jaxpr(
        _init_fn(exp.model, _loads_bert(exp)), return_shape=True)(key, batch))


def _param_shapes(exp: Experiment, key, batch) -> Any:
    return _init_jaxpr(exp, key, batch)[1]


def _pretrained_bert(exp: Experiment, params) -> Any | None:
    """The pretrained BERT weights (host arrays) that replace ``params['bert']``, if configured."""
    if _loads_bert(exp) and "bert" in params:
        return bert_lib.load_pretrained(exp.config.dataset.bert_path)[1]
    return None


def abstract_params(exp: Experiment) -> Any:
    """The shapes, dtypes and shardings of what `init_params` returns (a restore target), without
    compiling or running the init."""
    shapes = _param_shapes(exp, *_init_args(exp))
    pretrained = _pretrained_bert(exp, shapes)
    if pretrained is not None:
        shapes = {**shapes, "bert": jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                                           pretrained)}
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                                  exp.shardings(shapes))


def init_params(exp: Experiment) -> Any:
    """Init from the seed, laid out on the mesh (replicated, or split on the ``model`` axis by
    `Experiment.shardings`), with the pretrained BERT loaded if configured. The init's jaxpr is
    evaluated in pieces (`init_pieces`: the jitted init's numbers for a fraction of its compile; its
    programs are shared by the seeds, stages and variants of a model) on this host, then put on the
    devices as the pretrained weights are (the same values on every host)."""
    key, batch = _init_args(exp)
    closed, shapes = _init_jaxpr(exp, key, batch)
    leaves = init_pieces.evaluate(closed, *jax.tree_util.tree_leaves((key, batch)))
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), [np.asarray(x) for x in leaves])
    params = jax.device_put(params, exp.shardings(shapes))
    pretrained = _pretrained_bert(exp, params)
    if pretrained is not None:
        params = dict(params)
        params["bert"] = sharding.put(pretrained, exp.mesh, sharding.min_shard_size(exp.config))
    return params


def make_eval_step(exp: Experiment, **kwargs):
    """The jitted eval step of ``exp``'s model, returning its spec's ``eval_outputs`` too."""
    return step_lib.make_eval_step(exp.model, exp.mesh, compute_dtype=exp.compute_dtype,
                                   options=step_lib.compiler_options(exp.config),
                                   extra_outputs=exp.spec.eval_outputs, **kwargs)


# ------------------------------------------------------------------------------------- predictions

def predict_split(exp: Experiment, params, split: str, eval_step, transform=None) -> dict[str, np.ndarray]:
    """Logits (or predictions), labels and embeddings of every example of ``split`` on this host.
    ``transform(batch, index) -> batch`` edits each host batch first (`mmfuse_jax.perturb.transform`)."""
    loader = exp.loader(split, train=False)
    outs: dict[str, list] = {}
    labels = []
    # disable=None: a bar on a terminal, none in logs/CI (tqdm checks isatty).
    for i, batch in enumerate(tqdm(loader.epoch(0), total=len(loader), desc=f"predict {split}", unit="batch",
                                   leave=False, dynamic_ncols=True, disable=None)):
        if transform is not None:
            batch = transform(batch, i)
        res = jax.device_get(eval_step(params, sharding.to_global(batch, exp.mesh)))
        batch = sharding.gather_rows(batch, exp.mesh, ("valid", "label", *UNIMODAL_LABELS))  # all hosts' rows
        keep = batch["valid"] > 0
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v)[keep])
        labels.append(batch["label"][keep])
        for k in UNIMODAL_LABELS:  # unimodal labels travel along for scorers that use them
            if k in batch:
                outs.setdefault(k, []).append(batch[k][keep])
    result = {k: np.concatenate(v) for k, v in outs.items()}
    result["label"] = np.concatenate(labels)
    return result


def score(exp: Experiment, pred: dict[str, np.ndarray]) -> dict[str, float]:
    """The dataset's official metrics (config.dataset.metric names a `metrics.SCORERS` entry)."""
    return metrics_lib.score(_metric_set(exp), pred)


def metric_names(exp: Experiment) -> list[str]:
    return metrics_lib.metric_names(_metric_set(exp))


def _metric_set(exp: Experiment) -> str:
    # config.metric (optional) overrides the dataset's set for one run without touching
    # config.dataset (whose fields fingerprint the prepared data), e.g. KuDA stage 1's unimodal scores.
    return exp.config.get("metric") or exp.config.dataset.get("metric", "classification")
