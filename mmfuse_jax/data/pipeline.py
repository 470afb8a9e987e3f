"""prepare (release -> TFDS array_record, once) and the grain loader (buckets, valid mask, hosts).

prepare: the format reader turns the official files into examples; text is tokenized with the
checkpoint's WordPiece tokenizer as the official code does (``[CLS] tokens[:L-2] [SEP]``); the
examples are written as a TFDS dataset in array_record files with a fingerprint of everything
that went into them, so a changed config or release is prepared again and an unchanged one never.
No pickle is read after this step.

load: `Loader` reads the prepared split with ``tfds.data_source``-style random access and grain.
The *global* batch composition is decided from the seeded permutation and the stored lengths, so
every host agrees on it and on its bucket; each host then reads only its slice of rows. A batch
is padded to the smallest of ``num_buckets`` length buckets that fits all its rows (one bucket
index for all modalities: at most ``num_buckets`` shapes, so at most that many compilations),
and to the full batch size with ``valid = 0`` rows. The position (epoch, next batch) is the
iterator state saved in checkpoints.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np

from mmfuse_jax.batch import UNIMODAL_LABELS
from mmfuse_jax.data import buckets as buckets_lib
from mmfuse_jax.data.formats import get_format
from mmfuse_jax.errors import ConfigError, DataError

SPLITS = ("train", "dev", "test")
_BUILDER = "mmfuse_prepared"


# ---------------------------------------------------------------------------------- prepare

def _fingerprint(ds) -> str:
    h = hashlib.sha256()
    fields = ds.to_dict() if hasattr(ds, "to_dict") else dict(ds)
    fields.pop("buckets", None)  # how batches are padded, not what is prepared (auto lengths are stored anyway)
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    root = ds.root
    for dirpath, _, files in sorted(os.walk(root)):
        if os.path.basename(dirpath).startswith("prepared") or "/prepared" in dirpath:
            continue
        for name in sorted(files):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepared_dir(ds) -> str:
    return ds.prepared_dir or os.path.join(ds.root, "prepared")


def tokenize(texts: list[str], tokenizer, max_len: int) -> tuple[list[np.ndarray], int]:
    """Official MIntRec convention: [CLS] + tokens[:max_len-2] + [SEP] (the tokenizer's own cls/sep tokens:
    <s> ... </s> for RoBERTa); returns ids and #truncated."""
    ids, truncated = [], 0
    for text in texts:
        toks = tokenizer.tokenize(text)
        if len(toks) > max_len - 2:
            toks, truncated = toks[: max_len - 2], truncated + 1
        ids.append(np.asarray(tokenizer.convert_tokens_to_ids([tokenizer.cls_token, *toks, tokenizer.sep_token]),
                              np.int32))
    return ids, truncated


@functools.cache
def _builder_class():
    """Defined once per process: TFDS registers builder classes by name when they are created."""
    import tensorflow_datasets as tfds

    class MmfusePrepared(tfds.core.GeneratorBasedBuilder):
        """Examples of one release after reading and tokenization (features as float32)."""

        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, splits: dict | None = None, dims: dict | None = None,
                     label_dtype=np.int32, extra_labels: tuple = (), label_shape: tuple = (),
                     progress: bool = False, **kwargs):
            self._splits, self._dims, self._label_dtype = splits, dims, label_dtype
            self._progress = progress
            self._label_shape = tuple(label_shape)
            self._extra_labels = extra_labels
            super().__init__(**kwargs)

        def _info(self):
            f = tfds.features
            feats = {"key": f.Text(), "text_ids": f.Tensor(shape=(None,), dtype=np.int32),
                     "text_type_ids": f.Tensor(shape=(None,), dtype=np.int32),
                     "label": f.Tensor(shape=self._label_shape, dtype=self._label_dtype) if self._label_shape
                     else f.Scalar(dtype=self._label_dtype)}
            for m, d in self._dims.items():  # audio, video and (feature path) text
                feats["text_feats" if m == "text" else m] = f.Tensor(shape=(None, d), dtype=np.float32)
            for k in self._extra_labels:
                feats[k] = f.Scalar(dtype=np.float32)
            return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=f.FeaturesDict(feats))

        # TFDS prints "Downloading and preparing dataset ..." around the build: nothing is downloaded
        # here, and prepare() prints its own lines (private hooks; harmless if a TFDS renames them).
        def _log_download_bytes(self):
            pass

        def _log_download_done(self):
            pass

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(name, rows) for name, rows in self._splits.items()}

        def _generate_examples(self, name, rows):
            from tqdm.auto import tqdm

            keys = list(self._info().features.keys())
            bar = tqdm(rows, desc=f"writing {name}", unit="ex", disable=None if self._progress else True, leave=False,
                       mininterval=1.0)
            for i, ex in enumerate(bar):
                yield i, {k: ex[k] for k in keys}

    return MmfusePrepared


def _length(ex: dict, modality: str) -> int:
    if modality == "text":
        return max(len(ex["text_ids"]), len(ex.get("text_feats", ())))
    return len(ex[modality])


def _add_token_ids(splits: dict, bert_path: str, max_text: int) -> tuple[int, dict]:
    """Give every row int32 ``text_ids``/``text_type_ids`` (cut to ``max_text``; rows without ids are
    tokenised with the tokenizer at ``bert_path``); returns (utterances truncated, lengths per split)."""
    from mmfuse_jax.encoders.bert import load_tokenizer

    n_trunc, lengths = 0, {}
    tokenizer = None
    for name, rows in splits.items():
        if any("text_ids" not in r for r in rows):
            tokenizer = tokenizer or load_tokenizer(bert_path)
            ids, t = tokenize([r["text"] for r in rows], tokenizer, max_text)
            n_trunc += t
            for r, i in zip(rows, ids):
                r["text_ids"] = i
        for r in rows:
            r["text_ids"] = np.asarray(r["text_ids"], np.int32)[:max_text]
            r.setdefault("text_type_ids", np.zeros_like(r["text_ids"]))
            r["text_type_ids"] = np.asarray(r["text_type_ids"], np.int32)[: len(r["text_ids"])]
        lengths[name] = {m: [int(_length(r, m)) for r in rows] for m in ("text", "audio", "video")}
    return n_trunc, lengths


def prepare(ds, *, verbose: bool = True) -> str:
    """Prepare ``ds`` (config.dataset) once; returns the prepared folder. Re-running is free."""
    import logging

    out = prepared_dir(ds)
    fp = _fingerprint(ds)
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f).get("fingerprint") == fp:
                return out
    reader = get_format(ds.format)
    if verbose:
        print(f"preparing {ds.format} from {ds.root} (once; later runs reuse {out})", flush=True)
    max_lens = dict(ds.max_len)
    read_options = dict(ds.read_options) if "read_options" in ds else {}  # format-specific (e.g. which pickle)
    splits, report = reader.read(ds.root, feat_dims=dict(ds.feat_dims), max_lens=max_lens,
                                 nonfinite=ds.nonfinite, **read_options)
    n_trunc, lengths = _add_token_ids(splits, ds.bert_path, max_lens["text"])
    extra_labels = tuple(k for k in UNIMODAL_LABELS if all(k in r for rows in splits.values() for r in rows))
    import tensorflow_datasets as tfds

    logging.getLogger("absl").setLevel(logging.WARNING)
    label_dtype = np.float32 if getattr(ds, "task", "classification") == "regression" else np.int32
    label_shape = tuple(ds.get("label_shape", ()))  # e.g. (4,): IEMOCAP's four binary emotions
    builder = _builder_class()(splits=splits, dims=dict(ds.feat_dims), label_dtype=label_dtype,
                               extra_labels=extra_labels, label_shape=label_shape, progress=verbose,
                               data_dir=os.path.join(out, fp), file_format="array_record")
    tfds.disable_progress_bar()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    meta = {"fingerprint": fp, "builder_dir": os.path.relpath(builder.data_dir, out),
            "sizes": {k: len(v) for k, v in splits.items()}, "lengths": lengths,
            "extra_labels": list(extra_labels), "label_shape": list(label_shape),
            "buckets": buckets_lib.auto_buckets(lengths["train"], max_lens, ds.num_buckets)
            if "train" in lengths else None,
            "report": report.lines() + ([f"truncated text: {n_trunc} utterances"] if n_trunc else [])}
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, meta_path)  # the dataset counts as prepared only once this file is whole
    for old in os.listdir(out):  # datasets prepared from an earlier config or release
        if old != fp and len(old) == 16 and all(ch in "0123456789abcdef" for ch in old):
            shutil.rmtree(os.path.join(out, old), ignore_errors=True)
    if verbose:
        print(f"prepared {ds.format} from {ds.root} -> {out}: "
              + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
        for line in meta["report"]:
            print("  " + line)
    return out


# ---------------------------------------------------------------------------------- loading

@dataclasses.dataclass
class Prepared:
    """A prepared dataset: per-split random-access sources and example lengths."""

    root: str
    meta: dict

    @classmethod
    def open(cls, ds) -> Prepared:
        out = prepare(ds)
        with open(os.path.join(out, "meta.json")) as f:
            return cls(out, json.load(f))

    def source(self, split: str):
        import tensorflow_datasets as tfds

        if split not in self.meta["sizes"]:
            raise DataError(self.root, f"split '{split}'", f"one of {sorted(self.meta['sizes'])}", "missing")
        builder = tfds.builder_from_directory(os.path.join(self.root, self.meta["builder_dir"]))
        return builder.as_data_source(split=split)

    def lengths(self, split: str) -> dict[str, np.ndarray]:
        return {m: np.asarray(v, np.int64) for m, v in self.meta["lengths"][split].items()}


bucket_lengths = buckets_lib.fixed_buckets  # the 'fixed' scheme's lengths (also the last = every maximum)


def choose_bucket(buckets: list[dict[str, int]], lengths: dict[str, np.ndarray]) -> int:
    need = {m: int(v.max(initial=1)) for m, v in lengths.items()}
    for i, b in enumerate(buckets):
        if all(need[m] <= b[m] for m in need):
            return i
    return len(buckets) - 1


def collate(rows: list[dict[str, Any]], *, batch_size: int, lens: dict[str, int], dims: dict[str, int],
            label_dtype=np.int32, extra_labels: tuple = (), label_shape: tuple = ()) -> dict[str, np.ndarray]:
    """Pad ``rows`` to ``lens`` and to ``batch_size`` rows (``valid`` = 0 on the padding rows).

    ``dims`` holds the feature sizes of audio, video and, on the feature path, text; ``label_shape``
    the shape of one label (default scalar: label [B]; (4,) gives IEMOCAP's label [B, 4]).
    """
    b, lt = batch_size, lens["text"]
    if len(rows) > b:
        raise ConfigError(f"collate: {len(rows)} rows do not fit a batch of {b}")
    out = {"text_ids": np.zeros((b, lt), np.int32), "text_mask": np.zeros((b, lt), np.int32),
           "text_type_ids": np.zeros((b, lt), np.int32),
           "label": np.zeros((b, *label_shape), label_dtype), "valid": np.zeros((b,), np.float32)}
    for k in extra_labels:
        out[k] = np.zeros((b,), np.float32)
    if "text" in dims:
        out["text"] = np.zeros((b, lt, dims["text"]), np.float32)
    for m in ("audio", "video"):
        out[m] = np.zeros((b, lens[m], dims[m]), np.float32)
        out[f"{m}_mask"] = np.zeros((b, lens[m]), np.int32)
    for i, r in enumerate(rows):
        t = min(len(r["text_ids"]), lt)
        out["text_ids"][i, :t], out["text_type_ids"][i, :t] = r["text_ids"][:t], r["text_type_ids"][:t]
        if "text" in dims:
            n = min(len(r["text_feats"]), lt)
            out["text"][i, :n] = r["text_feats"][:n]
            t = max(t, n)
        out["text_mask"][i, :t] = 1
        for m in ("audio", "video"):
            n = min(len(r[m]), lens[m])
            out[m][i, :n], out[f"{m}_mask"][i, :n] = r[m][:n], 1
        out["label"][i], out["valid"][i] = r["label"], 1.0
        for k in extra_labels:
            out[k][i] = r[k]
    return out


class Loader:
    """Batches of one split for this host, in the order fixed by ``seed`` and the epoch."""

    def __init__(self, prepared: Prepared, split: str, *, batch_size: int, max_len: dict, dims: dict,
                 num_buckets: int, shuffle: bool, seed: int = 0, label_dtype=np.int32,
                 process_index: int = 0, process_count: int = 1, num_threads: int = 2, cache_mb: float = 0,
                 buckets: str = "fixed"):
        if batch_size % process_count:
            raise ConfigError(f"batch_size {batch_size} must be divisible by the {process_count} hosts")
        self.source = prepared.source(split)
        self.lengths = prepared.lengths(split)
        self.n = len(self.source)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.scheme = buckets_lib.check_scheme(buckets)  # see data/buckets.py
        self.buckets = bucket_lengths(dict(max_len), num_buckets) if buckets == "fixed" else \
            prepared.meta.get("buckets") or buckets_lib.auto_buckets(prepared.meta["lengths"]["train"],
                                                                     dict(max_len), num_buckets)
        self._grouped = None  # 'auto' training batches: (epoch, [(rows, bucket), ...])
        self.dims, self.label_dtype = dict(dims), label_dtype
        self.extra_labels = tuple(prepared.meta.get("extra_labels", ()))
        self.label_shape = tuple(prepared.meta.get("label_shape", ()))
        self.process_index, self.process_count, self.num_threads = process_index, process_count, num_threads
        # Decoded rows by index, filled on first read up to ``cache_mb`` (grain threads add to it: a
        # dict item assignment is atomic, and a row read twice by a race is merely decoded twice).
        self._cache: dict[int, dict] = {}
        self._order: tuple[int, np.ndarray] | None = None
        self._cache_left = int(cache_mb * 2 ** 20)

    def __len__(self) -> int:
        if self.scheme == "auto" and self.shuffle:  # one short batch per bucket at most: epoch-independent
            return len(self._grouped_batches(0))
        return math.ceil(self.n / self.batch_size)

    def _grouped_batches(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        cached = self._grouped
        if cached is None or cached[0] != epoch:
            rows = buckets_lib.bucket_of(self.buckets, self.lengths)
            cached = (epoch, buckets_lib.group_batches(self.order(epoch), rows, self.batch_size,
                                                       np.random.default_rng([self.seed, epoch, 1])))
            self._grouped = cached
        return cached[1]

    def padded_fraction(self, epoch: int = 0) -> dict[str, float]:
        """Per modality, the share of padded positions in ``epoch``'s batch tensors (`buckets.padded_fraction`)."""
        plans = [self._global_batch(epoch, b) for b in range(len(self))]
        return buckets_lib.padded_fraction(plans, self.buckets, self.lengths, self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Example indices of ``epoch`` (computed once per epoch, not once per batch)."""
        cached = self._order
        if cached is not None and cached[0] == epoch:
            return cached[1]
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        self._order = (epoch, order)  # one tuple assignment: threads see the old or the new pair
        return order

    def _global_batch(self, epoch: int, b: int) -> tuple[np.ndarray, int]:
        """Indices of every row of global batch ``b`` and its bucket."""
        if self.scheme == "auto" and self.shuffle:
            return self._grouped_batches(epoch)[b]
        idx = self.order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        return idx, choose_bucket(self.buckets, {m: v[idx] for m, v in self.lengths.items()})

    def plan(self, epoch: int, b: int) -> tuple[np.ndarray, int]:
        """Indices of this host's rows in global batch ``b`` and the bucket of the whole batch."""
        idx, bucket = self._global_batch(epoch, b)
        per_host = self.batch_size // self.process_count
        return idx[self.process_index * per_host:(self.process_index + 1) * per_host], bucket

    def rows(self, idx: list[int]) -> list[dict]:
        """Decoded examples ``idx``: from the cache, the rest in one batched read of the source."""
        missing = [i for i in idx if i not in self._cache]
        if missing:
            getitems = getattr(self.source, "__getitems__", None)  # one batched read when the source has it
            got = getitems(missing) if getitems else [self.source[i] for i in missing]
            for i, row in zip(missing, got):
                size = sum(getattr(v, "nbytes", 64) for v in row.values())
                if size > self._cache_left:
                    break
                self._cache_left -= size
                self._cache[i] = row
            fresh = dict(zip(missing, got))
            return [self._cache.get(i) or fresh[i] for i in idx]
        return [self._cache[i] for i in idx]

    def load(self, epoch: int, b: int) -> dict[str, np.ndarray]:
        idx, bucket = self.plan(epoch, b)
        rows = self.rows([int(i) for i in idx])
        return collate(rows, batch_size=self.batch_size // self.process_count, lens=self.buckets[bucket],
                       dims=self.dims, label_dtype=self.label_dtype, extra_labels=self.extra_labels,
                       label_shape=self.label_shape)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start..len-1`` of ``epoch``, read ahead on grain threads, in order."""
        import grain

        ds = grain.MapDataset.range(start, len(self)).map(lambda b: self.load(epoch, int(b)))
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=4))
        yield from it
