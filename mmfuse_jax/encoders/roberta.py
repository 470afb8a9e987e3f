"""A small random RoBERTa checkpoint for synthetic data: byte-level BPE trained on the data's texts.

`encoders.bert` runs RoBERTa checkpoints (``model_type: roberta``); this writes one the way the synthetic
generators write their random BERT (`data.synthetic.common.write_random_bert`), so an experiment can
swap the text encoder on synthetic data: ``config.dataset.bert_path`` = the folder written here and, for
MMSA-layout data, ``config.dataset.read_options.tokenize_raw_text=True`` (re-tokenise ``raw_text``).
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import jax
import jax.numpy as jnp

from mmfuse_jax.encoders import bert

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: bos, pad, eos, unk, mask (RoBERTa's)


def write_random_roberta(out: str, texts: Iterable[str], *, hidden: int, layers: int, heads: int, seed: int,
                         max_positions: int = 64, intermediate: int = 0, dropout: float = 0.1,
                         vocab_size: int = 400) -> bert.BertConfig:
    """config.json + model.safetensors + vocab.json/merges.txt (BPE of ``texts``) under ``out``.

    ``max_positions``: the longest tokenised text; the table has 2 more rows (RoBERTa numbers positions
    from pad_token_id + 1)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    os.makedirs(out, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                            show_progress=False)
    bpe.save_model(out)
    RobertaTokenizerFast.from_pretrained(out, local_files_only=True).save_pretrained(out)
    cfg = bert.BertConfig(vocab_size=bpe.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                          hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                          max_position_embeddings=max_positions + 2, type_vocab_size=1, layer_norm_eps=1e-5,
                          pad_token_id=1, model_type="roberta")
    ids = jnp.zeros((1, 2), jnp.int32)
    params = bert.BertModel(cfg).init(jax.random.key(seed), ids, jnp.ones_like(ids))["params"]
    bert.save_pretrained(out, cfg, params)
    return cfg
