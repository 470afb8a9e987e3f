"""The Batch contract: the only thing data and models share.

==================  =========  ============  ============================================
key                 dtype      shape         meaning
==================  =========  ============  ============================================
text_ids            int32      [B, Lt]       WordPiece ids ([CLS] ... [SEP], 0-padded)
text_mask           int32      [B, Lt]       1 = real token
text_type_ids       int32      [B, Lt]       BERT segment ids
text (optional)     float32    [B, Lt, Dt]   precomputed text features (feature path)
audio               float32    [B, La, Da]   acoustic frames, 0-padded
audio_mask          int32      [B, La]       1 = real frame (all 0: modality missing)
video               float32    [B, Lv, Dv]   visual frames, 0-padded
video_mask          int32      [B, Lv]
label               int32/f32  [B]           class index, or a regression target
label_text/...      float32    [B]           optional unimodal labels (label_text, label_audio, label_video)
valid               float32    [B]           0 for rows that pad the last batch
==================  =========  ============  ============================================

Every key is always present: a missing modality is zeros with an all-zero mask, so one compiled
program serves every batch of a bucket.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmfuse_jax.errors import DataError

MODALITIES = ("text", "audio", "video")
REQUIRED = ("text_ids", "text_mask", "text_type_ids", "audio", "audio_mask", "video", "video_mask",
            "label", "valid")
UNIMODAL_LABELS = ("label_text", "label_audio", "label_video")


def validate(batch: Mapping[str, np.ndarray], *, where: str = "batch") -> None:
    """Check keys, ranks, agreeing batch/time sizes and finiteness; raise `DataError` naming the key."""
    missing = [k for k in REQUIRED if k not in batch]
    if missing:
        raise DataError(where, f"keys {missing}", f"all Batch keys {list(REQUIRED)}", "missing")
    b = np.shape(batch["valid"])[0]
    ranks = {"text_ids": 2, "text_mask": 2, "text_type_ids": 2, "audio": 3, "audio_mask": 2,
             "video": 3, "video_mask": 2, "label": 1, "valid": 1}
    for key, rank in ranks.items():
        shape = np.shape(batch[key])
        if len(shape) != rank or shape[0] != b:
            raise DataError(where, f"key '{key}'", f"rank {rank} with batch size {b}", f"shape {list(shape)}")
    for seq, mask in (("text_ids", "text_mask"), ("text_type_ids", "text_mask"), ("audio", "audio_mask"),
                      ("video", "video_mask")):
        if np.shape(batch[seq])[1] != np.shape(batch[mask])[1]:
            raise DataError(where, f"key '{mask}'", f"length {np.shape(batch[seq])[1]} (as '{seq}')",
                            f"{np.shape(batch[mask])[1]}")
    for key in ("audio", "video", "text"):
        if key in batch and not np.all(np.isfinite(np.asarray(batch[key]))):
            raise DataError(where, f"key '{key}'", "finite values", "NaN or inf")
