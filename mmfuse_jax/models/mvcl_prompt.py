"""MVCL-DAF++'s label-slot prompts (`models/mvcl_daf.py`): the text + K label slots the classifier's
BERT reads, the slot means the multi-view views are read at, and the intent names' WordPiece ids
(tokenised once, when the model is built)."""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.errors import ConfigError


def prompt_sequence(text_ids_bl, text_mask_bl, slot_ids_bk, slot_mask_bk, sep_id: int):
    """[CLS] text [SEP] + K slot tokens + [SEP], right after each row's own text.

    Returns ids, mask, segment ids (1 for the slots and the last [SEP]) [B, L+K+1] and the slot
    positions [B, K]. Slots with slot_mask 0 are padding (mask 0). Padding of the text part is
    zeroed first, so the ids under padding never matter.
    """
    length, k = text_ids_bl.shape[1], slot_ids_bk.shape[1]
    total = length + k + 1
    n_b = text_mask_bl.astype(jnp.int32).sum(1)
    pad = ((0, 0), (0, k + 1))
    mask = jnp.pad(text_mask_bl.astype(jnp.int32), pad)
    ids = jnp.pad(text_ids_bl.astype(jnp.int32) * mask[:, :length], pad)
    pos_t = jnp.arange(total)[None]
    slot_pos_bk = n_b[:, None] + jnp.arange(k)[None]
    at_slot_bkt = pos_t[:, None, :] == slot_pos_bk[:, :, None]
    at_sep_bt = pos_t == (n_b + k)[:, None]
    ids = ids + (at_slot_bkt * slot_ids_bk[:, :, None]).sum(1) + at_sep_bt * sep_id
    mask = mask + (at_slot_bkt * slot_mask_bk[:, :, None].astype(jnp.int32)).sum(1) + at_sep_bt
    segment = ((pos_t >= n_b[:, None]) * mask).astype(jnp.int32)
    return ids.astype(jnp.int32), mask.astype(jnp.int32), segment, slot_pos_bk


def slot_mean(x_btd: jax.Array, pos_bk: jax.Array, mask_bk: jax.Array) -> jax.Array:
    """Mean of x over the slot positions with mask 1 -> [B, D] (zeros if none)."""
    picked = jnp.take_along_axis(x_btd, pos_bk[..., None], axis=1)
    m = mask_bk.astype(x_btd.dtype)[..., None]
    return (picked * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def tokenize_labels(label_names: Sequence[str], vocab: str, bert_path: str, label_len: int,
                    vocab_tokens: Sequence[str] = ()) -> dict:
    """Intent names -> WordPiece ids (each truncated to ``label_len``, at least one token), plus the
    [MASK] and [SEP] ids, from the checkpoint's tokenizer or the synthetic vocabulary (``vocab_tokens``)."""
    if vocab == "checkpoint":
        from mmfuse_jax.encoders.bert import load_tokenizer

        tok = load_tokenizer(bert_path)

        def encode(s):
            return tok.convert_tokens_to_ids(tok.tokenize(s))
        token_id = tok.convert_tokens_to_ids
    elif vocab == "synthetic" and len(vocab_tokens):
        from tokenizers import BertWordPieceTokenizer

        # The synthetic BERT directory has no tokenizer_config.json: transformers then lower-cases.
        wp = BertWordPieceTokenizer(vocab={w: i for i, w in enumerate(vocab_tokens)}, lowercase=True)

        def encode(s):
            return wp.encode(s, add_special_tokens=False).ids
        token_id = wp.token_to_id
    else:
        raise ConfigError(f"config.model.label_vocab={vocab!r}: expected 'checkpoint' or 'synthetic' (with the "
                          "vocabulary's tokens in config.model.vocab_tokens)")
    unk = token_id("[UNK]")
    tokens = tuple(tuple(int(i) for i in (encode(name) or [unk])[:label_len]) for name in label_names)
    return {"label_tokens": tokens, "mask_token_id": int(token_id("[MASK]")), "sep_token_id": int(token_id("[SEP]"))}


def label_table(label_tokens: Sequence[Sequence[int]], label_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged name tokens -> ids [N, K] (0-padded) and mask [N, K]."""
    ids = np.zeros((len(label_tokens), label_len), np.int32)
    mask = np.zeros((len(label_tokens), label_len), np.int32)
    for i, toks in enumerate(label_tokens):
        ids[i, :len(toks)], mask[i, :len(toks)] = toks, 1
    return ids, mask
