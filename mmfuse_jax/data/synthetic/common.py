"""What every synthetic generator shares: the special tokens, the random BERT it writes next to its
data, the spec <-> ``config.dataset.synthetic`` conversion and the ``--out=DIR`` command line."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_random_bert(out: str, vocab: Sequence[str], *, hidden: int, layers: int, heads: int, seed: int,
                      intermediate: int = 0, max_positions: int = 64, dropout: float = 0.1) -> None:
    """A small randomly initialised BERT (config.json, vocab.txt, model.safetensors) under ``out``.

    ``intermediate`` 0 means ``4 * hidden``; the weights are ``BertModel.init`` with ``key(seed)``.
    """
    import jax  # heavy: only when a benchmark is actually written
    import jax.numpy as jnp

    from mmfuse_jax.encoders import bert

    cfg = bert.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                          max_position_embeddings=max_positions, hidden_dropout_prob=dropout,
                          attention_probs_dropout_prob=dropout)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = bert.BertModel(cfg).init(jax.random.key(seed), ids, jnp.ones_like(ids))["params"]
    bert.save_pretrained(out, cfg, params, vocab=list(vocab))


def spec_from_fields(spec_cls: type, fields: Mapping[str, Any]):
    """``spec_cls(**fields)``, with lists turned back into tuples where the spec's default is a tuple
    (a ConfigDict round trip through JSON or the command line yields lists)."""
    defaults = {f.name: f.default for f in dataclasses.fields(spec_cls)}
    kw = {k: tuple(v) if isinstance(defaults.get(k), tuple) else v for k, v in fields.items()}
    return spec_cls(**kw)


def spec_cli(argv: list[str] | None, doc: str, spec_cls: type, write_fn: Callable, what: str) -> None:
    """``--out=DIR`` plus one flag per int/float field of ``spec_cls``; writes the benchmark."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write the benchmark into")
    for f in dataclasses.fields(spec_cls):
        if f.type in ("int", "float"):
            p.add_argument(f"--{f.name}", type=int if f.type == "int" else float, default=f.default)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    write_fn(out, spec_cls(**args))
    print(f"wrote the {what} to {out}")


# ------------------------------------------------------------------------- knobs (incongruity, noise)
# Drawn from their own generators, never the benchmark's: with every knob at 0 a benchmark is
# byte-identical to one written before the knobs existed.
META_FILE = "synthetic.json"
KNOB_FIELDS = ("incongruity", "audio_noise", "video_noise")


def incongruent_rows(seed: int, split: str, candidates: int, fraction: float) -> list[int]:
    """Which of ``candidates`` examples of ``split`` are incongruent: exactly ``round(fraction *
    candidates)`` of them, drawn from ``default_rng([seed, 7919, split])`` (sorted positions)."""
    if not 0.0 <= fraction <= 1.0:
        from mmfuse_jax.errors import ConfigError

        raise ConfigError(f"config.dataset.synthetic.incongruity={fraction}: expected a fraction in [0, 1]")
    k = int(round(fraction * candidates))
    if k == 0:
        return []
    rng = np.random.default_rng([seed, 7919, *split.encode()])
    return sorted(int(i) for i in rng.choice(candidates, k, replace=False))


def add_noise(frames: list[np.ndarray], std: float, seed: int, modality: str, split: str,
              lengths: Sequence[int] | None = None) -> None:
    """Add N(0, std^2) in place to each array of ``frames`` (its first ``lengths[i]`` rows; finite
    entries only), from ``default_rng([seed, 104729, modality, split])``."""
    if std <= 0:
        return
    rng = np.random.default_rng([seed, 104729, *modality.encode(), *split.encode()])
    for i, x in enumerate(frames):
        t = len(x) if lengths is None else int(lengths[i])
        x[:t] += (rng.standard_normal(x[:t].shape) * std).astype(x.dtype)


def write_meta(out: str, generator: str, spec: Any, incongruent: dict[str, list[str]]) -> None:
    """``OUT/synthetic.json``: the generator, its spec and the ids of the incongruent examples per split."""
    import json
    import os

    meta = {"generator": generator, "spec": dataclasses.asdict(spec), "incongruent": incongruent,
            "incongruent_counts": {k: len(v) for k, v in incongruent.items()}}
    with open(os.path.join(out, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
