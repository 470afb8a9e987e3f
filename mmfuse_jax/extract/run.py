"""One extraction run: transcripts -> per-file features (cached, resumable, in worker processes) -> a layout.

Per media file the features go to ``OUT/.extract_cache/<name>.npz`` (temporary name, then rename)
with a fingerprint of the settings and of the file's bytes; a rerun skips a file whose cached
fingerprint matches and redoes one whose file or settings changed. A file that fails (unreadable,
no audio or video stream, silent) is reported with its name and the reason and left out; the others
go on. The layout and ``features.json`` are written from the cache at the end of every run.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import re
import sys

import numpy as np

from mmfuse_jax.errors import DataError
from mmfuse_jax.extract import decode, layouts
from mmfuse_jax.extract import settings as S

CACHE = ".extract_cache"
FEATURES_JSON = "features.json"
SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "test": "test"}


@dataclasses.dataclass
class Summary:
    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        return f"done {len(self.done)}, skipped {len(self.skipped)} (already extracted), failed {len(self.failed)}"


def read_transcripts(path: str, media_dir: str, *, need_label: bool) -> list[dict]:
    """Rows of the transcripts TSV (header ``file text [label] [split]``), media paths checked."""
    from mmfuse_jax.data.formats.common import read_tsv

    if not os.path.isfile(path):
        raise DataError(path, None, "a transcripts TSV file (file, text, label[, split])", "no such file")
    with open(path, encoding="utf-8") as f:
        header = [c.strip().lower() for c in f.readline().rstrip("\n").split("\t")]
    want = ["file", "text"] + (["label"] if need_label else [])
    if header[: len(want)] != want or not set(header) <= {"file", "text", "label", "split"}:
        raise DataError(path, "header", f"tab-separated columns {want} (+ 'label', 'split' optional)", f"{header}")
    rows, names = [], {}
    for line, cells in enumerate(read_tsv(path, header), start=2):
        r = dict(zip(header, (c.strip() for c in cells)))
        media = os.path.join(media_dir, r["file"])
        if not os.path.isfile(media):
            raise DataError(path, f"line {line} column 'file'", f"a file under {media_dir}", repr(r["file"]))
        name = re.sub(r"[^A-Za-z0-9.-]+", "-", os.path.splitext(r["file"])[0]).strip("-.") or "clip"
        if name in names:
            raise DataError(path, f"line {line} column 'file'", "one row per clip name",
                            f"{r['file']!r} has the name {name!r} of line {names[name]}")
        names[name] = line
        split = SPLIT_NAMES.get(r.get("split", "").lower()) if r.get("split") else None
        if r.get("split") and split is None:
            raise DataError(path, f"line {line} column 'split'", "train, dev (or valid) or test", repr(r["split"]))
        rows.append({"name": name, "media": media, "text": r["text"], "label": r.get("label", ""), "split": split})
    if not rows:
        raise DataError(path, None, "at least one row after the header", "none")
    for i, r in enumerate(rows):  # no split column: 5 train, 1 dev, 1 test of every 7 rows, in file order
        r["split"] = r["split"] or ("train", "train", "train", "train", "train", "dev", "test")[i % 7]
    for split in ("train", "dev", "test"):
        if not any(r["split"] == split for r in rows):
            raise DataError(path, f"split {split!r}", "at least one clip per split (a 'split' column, or 7+ rows)",
                            "none")
    return rows


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def cached(cache_path: str, key: str) -> dict | None:
    """The cached features if their fingerprint is ``key`` (else None: redo)."""
    try:
        with np.load(cache_path, allow_pickle=False) as z:
            if str(z["fingerprint"]) == key:
                return {"audio": z["audio"], "video": z["video"]}
    except (OSError, ValueError, KeyError):
        pass
    return None


def work(media: str, cache_path: str, settings: dict) -> tuple[str, str, str]:
    """Extract one file into its cache entry: ('done' | 'skipped' | 'failed', reason, cache key)."""
    key = ""
    try:
        key = S.fingerprint(settings) + "-" + file_hash(media)
        if cached(cache_path, key) is not None:
            return "skipped", "", key
        feats = S.extract_file(media, settings)
        tmp = f"{cache_path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, fingerprint=np.asarray(key), **feats)
        os.replace(tmp, cache_path)
        return "done", "", key
    except decode.MediaError as e:
        return "failed", str(e), key
    except Exception as e:  # one bad file never stops the run; the summary names it
        return "failed", f"{type(e).__name__}: {e}", key


def extract_all(rows: list[dict], out: str, settings: dict, *, workers: int = 1, progress: bool = True
                ) -> tuple[Summary, dict[str, dict]]:
    """Extract every row's media (resumable); returns the summary and the features of the good files."""
    from tqdm.auto import tqdm

    cache = os.path.join(out, CACHE)
    os.makedirs(cache, exist_ok=True)
    jobs = {r["name"]: (r["media"], os.path.join(cache, r["name"] + ".npz"), settings) for r in rows}
    summary, keys = Summary(), {}
    bar = tqdm(total=len(jobs), desc="extracting", unit="file", disable=not progress, file=sys.stderr)
    if workers <= 1:
        results = ((name, work(*args)) for name, args in jobs.items())
        for name, (status, reason, key) in results:
            keys[name] = key
            _record(summary, name, status, reason, bar)
    else:
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(work, *args): name for name, args in jobs.items()}
            for fut in cf.as_completed(futures):
                status, reason, keys[futures[fut]] = fut.result()
                _record(summary, futures[fut], status, reason, bar)
    bar.close()
    feats = {name: cached(jobs[name][1], keys[name]) for name in jobs if name not in summary.failed}
    return summary, feats


def _record(summary: Summary, name: str, status: str, reason: str, bar) -> None:
    if status == "failed":
        summary.failed[name] = reason
        bar.write(f"failed: {name}: {reason}", file=sys.stderr)
    else:
        getattr(summary, status).append(name)
    bar.update(1)


def check_labels(rows: list[dict], layout: str, labels: list[str] | None, path: str) -> list[str]:
    """Class names (mintrec: ``--labels`` order, else sorted) after checking every row's label."""
    if layout == "mmsa":
        for r in rows:
            try:
                float(r["label"])
            except ValueError:
                raise DataError(path, f"clip {r['name']!r} column 'label'", "a number (sentiment score)",
                                repr(r["label"])) from None
        return []
    names = list(labels) if labels else sorted({r["label"] for r in rows})
    for r in rows:
        if r["label"] not in names:
            raise DataError(path, f"clip {r['name']!r} column 'label'", f"one of --labels {names}", repr(r["label"]))
    return names


def write_release(out: str, layout: str, rows: list[dict], feats: dict[str, dict], settings: dict, *,
                  transcripts: str, labels: list[str] | None, bert_path: str, max_text: int,
                  summary: Summary) -> dict:
    """The layout from the successful rows, and ``features.json`` (returned)."""
    names = check_labels(rows, layout, labels, transcripts)
    good = [r for r in rows if r["name"] in feats]
    for split in ("train", "dev", "test"):
        if not any(r["split"] == split for r in good):
            raise DataError(transcripts, f"split {split!r}", "at least one successfully extracted clip per split "
                            "(give a 'split' column or more clips)", "none")
    if layout == "mintrec":
        layouts.write_mintrec(out, good, feats)
    else:
        from mmfuse_jax.encoders.bert import load_tokenizer

        layouts.write_mmsa(out, good, feats, load_tokenizer(bert_path), max_text)
    regression = layout == "mmsa"
    y = [float(r["label"]) for r in good] if regression else []
    info = {"layout": layout, "task": "regression" if regression else "classification",
            # SIMS metrics for scores in [-1, 1], MOSI's (7-class, [-3, 3]) otherwise (metrics.SCORERS).
            "metric": ("sims" if max(map(abs, y)) <= 1 else "mosi") if regression else "classification",
            "labels": names, "bert_path": os.path.abspath(bert_path) if bert_path else "",
            "max_len": {"text": max_text, "audio": max(len(f["audio"]) for f in feats.values()),
                        "video": max(len(f["video"]) for f in feats.values())},
            "feat_dims": {"audio": settings["audio"]["dim"], "video": settings["video"]["dim"]},
            "clips": {s: sum(r["split"] == s for r in good) for s in ("train", "dev", "test")},
            "failed": summary.failed, "fingerprint": S.fingerprint(settings), "settings": settings}
    layouts.atomic_write(os.path.join(out, FEATURES_JSON), json.dumps(info, indent=1).encode())
    return info


def load_features_json(root: str) -> dict:
    path = os.path.join(root, FEATURES_JSON)
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise DataError(path, None, "the features.json that `python -m mmfuse_jax.extract` writes",
                        "no such file") from None
    except json.JSONDecodeError as e:
        raise DataError(path, None, "JSON", str(e)) from None
    if S.fingerprint(info.get("settings", {})) != info.get("fingerprint"):
        raise DataError(path, "fingerprint", "the hash of its 'settings'", "a mismatch (the file was edited)")
    return info
