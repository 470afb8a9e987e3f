"""Official KuDA weights <-> our parameters (re-exported by `mmfuse_jax.models.kuda`).

``params_from_official(named_arrays)`` maps the state_dict of the official ``KMSA`` model
(github:MKMaS-GUET/KuDA models/OverallModal.py), given as ``{name: numpy array}`` (e.g. an ``.npz``
saved from PyTorch), onto the parameter tree of `kuda.KuDA`; ``params_to_official(params)`` is the
reverse. Linear weights are transposed ([out, in] <-> kernel [in, out]), LayerNorm ``weight`` is our
``scale``, PyTorch's packed ``self_attn.in_proj_weight`` is our ``self_attn/in_proj`` kernel (q, k, v in
that order). The BERT pooler (``...model.pooler.*``) is skipped: it exists in the official model but
never reaches the output, and our model does not build it. A stage-1 checkpoint (``UniPretrain``,
names ``encoder.*`` / ``decoder.*``) maps with ``modality='text'|'video'|'audio'``.

Converting an official ``.pth`` (outside this project, with PyTorch)::

    import numpy as np, torch
    state = torch.load("KuDA_SIMS.pth", map_location="cpu")
    np.savez("kuda_sims.npz", **{k: v.numpy() for k, v in state.items()})
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from mmfuse_jax.encoders.bert import _flax_to_hf_name, _hf_to_flax_path
from mmfuse_jax.errors import DataError

_LETTER = {"t": "text", "v": "video", "a": "audio"}
_SKIP = re.compile(r"(pooler\.|position_ids$|\.token_type_ids$)")

# official dotted name -> our dotted path (before the leaf rename), applied in order.
_RULES = [
    (r"^UniEncKI\.enc_([tva])\.encoder\.tfencoder\.pos_encoder\.", lambda m: f"{_LETTER[m[1]]}_encoder."),
    (r"^UniEncKI\.enc_([tva])\.encoder\.tfencoder\.tfencoder\.layers\.(\d+)\.",
     lambda m: f"{_LETTER[m[1]]}_encoder.layer_{m[2]}."),
    (r"^UniEncKI\.enc_([tva])\.encoder\.adapters\.(\d+)\.tfencoder\.layers\.(\d+)\.",
     lambda m: f"{_LETTER[m[1]]}_encoder.adapter_{m[2]}.layer_{m[3]}."),
    (r"^UniEncKI\.enc_([tva])\.encoder\.adapters\.(\d+)\.", lambda m: f"{_LETTER[m[1]]}_encoder.adapter_{m[2]}."),
    (r"^UniEncKI\.enc_([tva])\.encoder\.layernorm\.", lambda m: f"{_LETTER[m[1]]}_encoder.layernorm."),
    (r"^UniEncKI\.enc_([tva])\.decoder\.MLP\.(\d+)\.", lambda m: f"{_LETTER[m[1]]}_decoder.linear_{int(m[2]) // 2}."),
    (r"^DyMultiFus\.((?:len|dim)_[tva])\.", lambda m: f"{m[1]}."),
    (r"^DyMultiFus\.dec_list\.(\d+)\.mhatt1\.", lambda m: f"block_{m[1]}."),
    (r"^DyMultiFus\.dec_list\.(\d+)\.", lambda m: f"block_{m[1]}."),
    (r"^CLS\.cls_layer\.(\d+)\.", lambda m: f"head.linear_{int(m[1]) // 2}."),
    (r"\.to_out\.0\.", lambda m: ".to_out."),
    (r"\.ffn\.net\.0\.", lambda m: ".ffn.linear1."),
    (r"\.ffn\.net\.3\.", lambda m: ".ffn.linear2."),
    (r"\.self_attn\.in_proj_(weight|bias)$", lambda m: f".self_attn.in_proj.{m[1]}"),
]
_BERT = re.compile(r"^UniEncKI\.enc_t\.encoder\.model\.")


def _our_path(name: str, ndim: int) -> tuple[str, ...]:
    if _BERT.match(name):
        return ("bert", *_hf_to_flax_path(_BERT.sub("", name), ndim))
    dotted = name
    for pattern, repl in _RULES:
        dotted = re.sub(pattern, repl, dotted)
    if dotted.startswith(("UniEncKI.", "DyMultiFus.", "CLS.")):
        raise KeyError(name)
    path = dotted.split(".")
    if path[-1] == "weight":
        path[-1] = "kernel" if ndim == 2 else "scale"
    return tuple(path)


def params_from_official(named: Mapping[str, np.ndarray], *, modality: str | None = None,
                         source: str = "official state_dict") -> dict:
    """Our parameter tree from official KMSA names (or a stage-1 ``UniPretrain`` one, with ``modality``)."""
    flat = {}
    for name, value in named.items():
        if modality is not None:
            name = f"UniEncKI.enc_{modality[0]}.{name}"
        if _SKIP.search(name):
            continue
        value = np.asarray(value, np.float32)
        try:
            path = _our_path(name, value.ndim)
        except KeyError:
            raise DataError(source, f"tensor '{name}'", "a parameter of the official KuDA (KMSA) model",
                            "an unknown name") from None
        flat[path] = value.T if path[-1] == "kernel" else value
    return traverse_util.unflatten_dict(flat)


def _official_name(path: tuple[str, ...]) -> str:
    if path[0] == "bert":
        return "UniEncKI.enc_t.encoder.model." + _flax_to_hf_name(path[1:])
    letter = {v: k for k, v in _LETTER.items()}
    head, *rest = path
    leaf = {"kernel": "weight", "scale": "weight"}.get(rest[-1], rest[-1])
    rest = [*rest[:-1], leaf]
    if head.endswith(("_encoder", "_decoder")):
        m, part = head.split("_")
        prefix = f"UniEncKI.enc_{letter[m]}."
        if part == "decoder":
            return prefix + f"decoder.MLP.{2 * int(rest[0].split('_')[1])}.{leaf}"
        if rest[0] in ("proj", "position_embeddings"):
            return prefix + "encoder.tfencoder.pos_encoder." + ".".join(rest)
        if rest[0] == "layernorm":
            return prefix + "encoder.layernorm." + leaf
        if rest[0].startswith("layer_"):
            return prefix + f"encoder.tfencoder.tfencoder.layers.{rest[0][6:]}." + _torch_layer(rest[1:])
        n = rest[0][8:]  # adapter_<n>
        if rest[1].startswith("layer_"):
            return prefix + f"encoder.adapters.{n}.tfencoder.layers.{rest[1][6:]}." + _torch_layer(rest[2:])
        return prefix + f"encoder.adapters.{n}." + ".".join(rest[1:])
    if head.startswith(("len_", "dim_")):
        return f"DyMultiFus.{head}.{leaf}"
    if head == "head":
        return f"CLS.cls_layer.{2 * int(rest[0].split('_')[1])}.{leaf}"
    i = head.split("_")[1]  # block_<i>
    inner = ".".join(rest).replace("to_out.", "to_out.0.").replace("ffn.linear1.", "ffn.net.0.") \
        .replace("ffn.linear2.", "ffn.net.3.")
    in_block = rest[0] in ("mhatt2", "ffn", "norm1", "norm2", "norm3")
    return f"DyMultiFus.dec_list.{i}." + ("" if in_block else "mhatt1.") + inner


def _torch_layer(rest: list[str]) -> str:
    if rest[:2] == ["self_attn", "in_proj"]:
        return f"self_attn.in_proj_{rest[2]}"
    return ".".join(rest)


def params_to_official(params: Mapping) -> dict[str, np.ndarray]:
    """Official KMSA state_dict names -> numpy arrays (no pooler: see the module docstring)."""
    out = {}
    for path, value in traverse_util.flatten_dict(dict(params)).items():
        value = np.asarray(value, np.float32)
        out[_official_name(path)] = value.T if path[-1] == "kernel" else value
    return out
