"""A Linen BERT (and RoBERTa) that loads (and saves) Hugging Face BERT / RoBERTa checkpoint directories.

transformers >= 5 ships no Flax models, so the module is ours; transformers is used for the
tokenizer only. Parameter names mirror the Hugging Face state dict one-to-one
(``encoder.layer.3.attention.self.query.weight`` <-> ``encoder/layer_3/attention/self/query/kernel``,
Dense kernels transposed), so conversion is a name map, not a table.

RoBERTa (``model_type: roberta`` in config.json; transformers' modeling_roberta) is the same body with
three differences, all read from the checkpoint: positions are numbered from ``pad_token_id + 1`` over
the non-pad tokens (cumsum(ids != pad) * (ids != pad) + pad, so max_position_embeddings = max length + 2),
one token type (type_vocab_size 1), and LayerNorm eps 1e-5; weights may carry a ``roberta.`` prefix
(RobertaFor*) and an ``lm_head``, which is skipped. Its tokenizer is byte-level BPE (vocab.json +
merges.txt, `load_tokenizer`), with ``<s>``/``</s>`` where BERT has [CLS]/[SEP]. Any other
``model_type`` is refused by `BertConfig.from_json`. Which encoder a model gets is therefore the
checkpoint's: ``config.dataset.bert_path`` (a RoBERTa directory makes every BERT model's text branch a
RoBERTa, KuDA's included); no other switch.

Shapes: ``input_ids``/``attention_mask``/``token_type_ids`` int32 [B, L]; outputs
``sequence_output`` [B, L, H], ``pooled_output`` [B, H] (tanh(dense(h_CLS)) as in BertPooler).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmfuse_jax.errors import DataError
from mmfuse_jax.layers.attention import dot_product_attention
from mmfuse_jax.layers.dropout import HashedDropout
from mmfuse_jax.layers.linear import Dense

MODEL_TYPES = ("bert", "roberta")
_ACTIVATIONS = {"gelu": lambda x: nn.gelu(x, approximate=False), "gelu_new": nn.gelu,
                "gelu_pytorch_tanh": nn.gelu, "relu": nn.relu}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that the forward pass uses."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"  # 'bert' | 'roberta' (MODEL_TYPES; module docstring)
    # Ours, never read from or written to config.json: how dropout masks are drawn (`DROPOUT_IMPLS`),
    # config.model.bert_dropout. 'threefry': flax nn.Dropout (jax.random); 'hashed':
    # layers.dropout.HashedDropout (a counter-based hash of the element index, one fused pass).
    dropout_impl: str = "threefry"

    @classmethod
    def from_json(cls, path: str) -> BertConfig:
        try:
            with open(path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise DataError(path, None, "a Hugging Face BERT config.json", "no such file") from None
        except json.JSONDecodeError as e:
            raise DataError(path, None, "valid JSON", str(e)) from None
        names = {f.name for f in dataclasses.fields(cls)} - {"dropout_impl"}
        cfg = cls(**{k: v for k, v in raw.items() if k in names})
        if cfg.model_type not in MODEL_TYPES:
            raise DataError(path, "model_type", f"one of {list(MODEL_TYPES)} (the text encoders we implement)",
                            repr(cfg.model_type))
        if cfg.hidden_act not in _ACTIVATIONS:
            raise DataError(path, "hidden_act", f"one of {sorted(_ACTIVATIONS)}", repr(cfg.hidden_act))
        if cfg.hidden_size % cfg.num_attention_heads:
            raise DataError(path, "hidden_size", "a multiple of num_attention_heads",
                            f"{cfg.hidden_size} with {cfg.num_attention_heads} heads")
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["dropout_impl"]
        d.update(architectures=["RobertaModel" if self.model_type == "roberta" else "BertModel"],
                 position_embedding_type="absolute", initializer_range=0.02)
        return d


DROPOUT_IMPLS = ("threefry", "hashed")


def _dropout(cfg: BertConfig, rate: float) -> nn.Module:
    """The dropout module of ``cfg.dropout_impl`` (both have no params: the param tree is the same)."""
    return HashedDropout(rate) if cfg.dropout_impl == "hashed" else nn.Dropout(rate)


def _dense(features: int, name: str) -> Dense:
    return Dense(features, kernel_init=nn.initializers.normal(0.02), name=name)


def _layer_norm(cfg: BertConfig, name: str = "LayerNorm") -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name=name)


class BertEmbeddings(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, *, train: bool, inputs_embeds=None):
        """``inputs_embeds`` [B, L, H]: used instead of the word embeddings of ``input_ids`` (as HF's
        argument; the word-embedding table is then not built)."""
        cfg, init = self.cfg, nn.initializers.normal(0.02)
        if cfg.model_type == "roberta":  # create_position_ids_from_input_ids: pads keep position pad_token_id
            real = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            pos = jnp.cumsum(real, axis=1) * real + cfg.pad_token_id
        else:
            pos = jnp.arange(input_ids.shape[1])[None, :]
        if inputs_embeds is None:
            inputs_embeds = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init,
                                     name="word_embeddings")(input_ids)
        x = (inputs_embeds
             + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                        name="position_embeddings")(pos)
             + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                        name="token_type_embeddings")(token_type_ids))
        x = _layer_norm(cfg)(x)
        return _dropout(cfg, cfg.hidden_dropout_prob)(x, deterministic=not train)


class BertSelfAttention(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x_btd, mask_bt, *, train: bool):
        cfg = self.cfg
        heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        split = lambda y: y.reshape(*y.shape[:2], heads, head_dim)
        q, k, v = (split(_dense(cfg.hidden_size, n)(x_btd)) for n in ("query", "key", "value"))
        out = dot_product_attention(q, k, v, mask_bt, dropout=_dropout(cfg, cfg.attention_probs_dropout_prob),
                                    deterministic=not train)
        return out.reshape(*x_btd.shape[:2], cfg.hidden_size)


class BertDenseResidual(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): BertSelfOutput and BertOutput."""

    cfg: BertConfig

    @nn.compact
    def __call__(self, x, residual, *, train: bool):
        x = _dense(self.cfg.hidden_size, "dense")(x)
        x = _dropout(self.cfg, self.cfg.hidden_dropout_prob)(x, deterministic=not train)
        return _layer_norm(self.cfg)(x + residual)


class BertAttention(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x, mask, *, train: bool):
        h = BertSelfAttention(self.cfg, name="self")(x, mask, train=train)
        return BertDenseResidual(self.cfg, name="output")(h, x, train=train)


class BertIntermediate(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x):
        return _ACTIVATIONS[self.cfg.hidden_act](_dense(self.cfg.intermediate_size, "dense")(x))


class BertLayer(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x, mask, *, train: bool):
        x = BertAttention(self.cfg, name="attention")(x, mask, train=train)
        h = BertIntermediate(self.cfg, name="intermediate")(x)
        return BertDenseResidual(self.cfg, name="output")(h, x, train=train)


class BertEncoder(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x, mask, *, train: bool, return_all: bool = False,
                 adapter: Callable[[jax.Array], jax.Array] | None = None, adapter_index: int = 0):
        """``adapter(h_btd) -> h_btd`` (optional) replaces the hidden states after ``adapter_index``
        layers (0: the embedding output, as in ``hidden_states``) before the next layer reads them;
        MAG-BERT injects its gate this way. ``hidden_states[adapter_index]`` is the adapted state."""
        n = self.cfg.num_hidden_layers
        if adapter is not None and not 0 <= adapter_index <= n:
            raise ValueError(f"adapter_index={adapter_index}: expected 0..{n} (BERT has {n} layers)")
        hidden = []
        for i in range(n + 1):
            if adapter is not None and i == adapter_index:
                x = adapter(x)
            hidden.append(x)
            if i < n:
                x = BertLayer(self.cfg, name=f"layer_{i}")(x, mask, train=train)
        return (x, tuple(hidden)) if return_all else x


class BertPooler(nn.Module):
    cfg: BertConfig

    @nn.compact
    def __call__(self, x_btd):
        return jnp.tanh(_dense(self.cfg.hidden_size, "dense")(x_btd[:, 0]))


class BertModel(nn.Module):
    """BERT body. ``embed`` and ``encode`` are exposed separately for models that modify embeddings."""

    cfg: BertConfig

    def setup(self):
        self.embeddings = BertEmbeddings(self.cfg)
        self.encoder = BertEncoder(self.cfg)
        self.pooler = BertPooler(self.cfg)

    def embed(self, input_ids, token_type_ids, *, train: bool = False, inputs_embeds=None):
        return self.embeddings(input_ids, token_type_ids, train=train, inputs_embeds=inputs_embeds)

    def encode(self, x_btd, attention_mask, *, train: bool = False, return_all: bool = False,
               adapter: Callable[[jax.Array], jax.Array] | None = None, adapter_index: int = 0):
        return self.encoder(x_btd, attention_mask, train=train, return_all=return_all, adapter=adapter,
                            adapter_index=adapter_index)

    def pool(self, sequence_output):
        return self.pooler(sequence_output)

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, train: bool = False,
                 return_all: bool = False, adapter: Callable[[jax.Array], jax.Array] | None = None,
                 adapter_index: int = 0) -> dict[str, Any]:
        """``adapter``/``adapter_index``: see `BertEncoder` (a module applied between two layers)."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embed(input_ids, token_type_ids, train=train)
        enc = self.encode(x, attention_mask, train=train, return_all=return_all, adapter=adapter,
                          adapter_index=adapter_index)
        seq, hidden = enc if return_all else (enc, None)
        out = {"sequence_output": seq, "pooled_output": self.pooler(seq)}
        if return_all:
            out["hidden_states"] = hidden
        return out


# ---------------------------------------------------------------- Hugging Face checkpoint I/O

def _hf_to_flax_path(name: str, ndim: int) -> tuple[str, ...]:
    parts = name.split(".")
    if parts[0] in MODEL_TYPES:  # BertFor* / RobertaFor* checkpoints prefix the body
        parts = parts[1:]
    out: list[str] = []
    for p in parts:
        if p.isdigit() and out and out[-1] == "layer":
            out[-1] = f"layer_{p}"
        else:
            out.append(p)
    leaf, owner = out[-1], out[-2]
    if owner.endswith("embeddings") and leaf == "weight":
        out[-1] = "embedding"
    elif owner == "LayerNorm":
        out[-1] = {"weight": "scale", "gamma": "scale", "beta": "bias"}.get(leaf, leaf)
    elif leaf == "weight" and ndim == 2:
        out[-1] = "kernel"
    return tuple(out)


def _flax_to_hf_name(path: tuple[str, ...]) -> str:
    parts = []
    for p in path:
        parts.extend(["layer", p[6:]] if p.startswith("layer_") else [p])
    leaf = parts[-1]
    parts[-1] = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(parts)


def params_from_state_dict(state: dict[str, np.ndarray], cfg: BertConfig, *, source: str = "") -> dict:
    """Map a Hugging Face BERT state dict onto the parameter tree of `BertModel(cfg)`."""
    expected = jax.eval_shape(lambda: BertModel(cfg).init(
        jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)))["params"]
    flat_expected = traverse_util.flatten_dict(expected)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for name, value in state.items():
        if name.startswith(("cls.", "classifier.", "qa_outputs.", "lm_head.")) or name.endswith("position_ids"):
            continue  # heads of BertFor* models and buffers: not part of the body
        path = _hf_to_flax_path(name, np.ndim(value))
        value = np.asarray(value, np.float32)
        if path[-1] == "kernel":
            value = value.T
        flat[path] = value
    missing = sorted("/".join(p) for p in flat_expected if p not in flat)
    if missing:
        raise DataError(source, f"tensor '{_flax_to_hf_name(tuple(missing[0].split('/')))}'",
                        f"all {len(flat_expected)} BERT tensors", f"{len(missing)} missing")
    for path, ref in flat_expected.items():
        if flat[path].shape != ref.shape:
            raise DataError(source, f"tensor '{_flax_to_hf_name(path)}'", f"shape {list(ref.shape)}",
                            f"{list(flat[path].shape)}")
    return traverse_util.unflatten_dict({p: jnp.asarray(flat[p]) for p in flat_expected})


def load_pretrained(path: str) -> tuple[BertModel, dict]:
    """``(module, params)`` from a Hugging Face BERT or RoBERTa directory (config.json + model.safetensors)."""
    from safetensors.numpy import load_file

    cfg = BertConfig.from_json(os.path.join(path, "config.json"))
    weights = os.path.join(path, "model.safetensors")
    if not os.path.exists(weights):
        raise DataError(weights, None, "model.safetensors (convert a pytorch_model.bin once with "
                        "transformers' save_pretrained(safe_serialization=True))", "no such file")
    try:
        state = load_file(weights)
    except Exception as e:
        raise DataError(weights, None, "a readable safetensors file", f"{type(e).__name__}: {e}") from None
    return BertModel(cfg), params_from_state_dict(state, cfg, source=weights)


def save_pretrained(path: str, cfg: BertConfig, params: dict, vocab: list[str] | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``) readable by transformers."""
    from safetensors.numpy import save_file

    os.makedirs(path, exist_ok=True)
    state = {}
    for p, v in traverse_util.flatten_dict(params).items():
        v = np.asarray(v, np.float32)
        state[_flax_to_hf_name(p)] = np.ascontiguousarray(v.T if p[-1] == "kernel" else v)
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg.to_hf_dict(), f, indent=2)
    if vocab is not None:
        with open(os.path.join(path, "vocab.txt"), "w") as f:
            f.write("\n".join(vocab) + "\n")


def load_tokenizer(path: str):
    """The checkpoint's tokenizer from its directory (no network): BERT WordPiece (vocab.txt) or, for
    ``model_type: roberta``, byte-level BPE (vocab.json + merges.txt). Both have ``cls_token`` and
    ``sep_token`` ([CLS]/[SEP] or <s>/</s>)."""
    config = os.path.join(path, "config.json")
    if os.path.exists(config) and BertConfig.from_json(config).model_type == "roberta":
        from transformers import RobertaTokenizerFast

        for name in ("vocab.json", "merges.txt"):
            if not os.path.exists(os.path.join(path, name)):
                raise DataError(os.path.join(path, name), None, "the RoBERTa BPE vocabulary next to the weights",
                                "no such file")
        return RobertaTokenizerFast.from_pretrained(path, local_files_only=True)
    from transformers import BertTokenizerFast

    if not os.path.exists(os.path.join(path, "vocab.txt")):
        raise DataError(os.path.join(path, "vocab.txt"), None, "the BERT vocabulary next to the weights",
                        "no such file")
    return BertTokenizerFast.from_pretrained(path, local_files_only=True)
