"""python -m mmfuse_jax.extract --media=DIR --transcripts=FILE.tsv --layout=mmsa|mintrec --out=DIR (see __init__)."""
from __future__ import annotations

import argparse
import os
import sys

from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.extract import run, settings


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mmfuse_jax.extract", description=(
        "Extract audio and video features from your media into a release layout that prepare/train.py read. "
        "TRANSCRIPTS is a TSV with the header 'file<TAB>text<TAB>label[<TAB>split]' (file: a name under "
        "--media; label: an intent name (mintrec) or a sentiment score (mmsa); split: train/dev/test, "
        "default 5:1:1 in file order). Rerunning skips files already extracted."))
    p.add_argument("--media", required=True, help="folder of media files (any container FFmpeg reads)")
    p.add_argument("--transcripts", required=True, help="TSV: file, text, label[, split]")
    p.add_argument("--layout", required=True, choices=("mintrec", "mmsa"))
    p.add_argument("--out", required=True, help="release folder to write (features.json included)")
    p.add_argument("--bert_path", required=True, help="BERT checkpoint folder (vocab.txt) the runs will use")
    p.add_argument("--labels", default="", help="mintrec: comma-separated class names in order (default: sorted)")
    p.add_argument("--audio", default="sims", choices=sorted(settings.AUDIO_SETS), help="audio feature set")
    p.add_argument("--fps", type=float, default=None, help=f"video frames per second "
                   f"(default {settings.VIDEO_DEFAULTS['fps']})")
    p.add_argument("--crop", type=int, default=None, help="face crop size (crop x crop appearance values)")
    p.add_argument("--max_text_len", type=int, default=50, help="BERT tokens per transcript ([CLS] ... [SEP])")
    p.add_argument("--workers", type=int, default=1, help="processes extracting in parallel")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return _go(args)
    except (DataError, ConfigError, ValueError, OSError) as e:  # one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume (finished files are kept)", file=sys.stderr)
        return 130


def _go(args: argparse.Namespace) -> int:
    vocab = os.path.join(args.bert_path, "vocab.txt")
    if not os.path.isfile(vocab):
        raise DataError(vocab, None, "the vocabulary of the BERT checkpoint your runs will use (--bert_path)",
                        "no such file")
    s = settings.make_settings(args.audio, fps=args.fps, crop=args.crop)
    rows = run.read_transcripts(args.transcripts, args.media, need_label=True)
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] or None
    run.check_labels(rows, args.layout, labels, args.transcripts)   # before any time is spent extracting
    summary, feats = run.extract_all(rows, args.out, s, workers=args.workers, progress=not args.no_progress)
    info = None
    if feats:
        info = run.write_release(args.out, args.layout, rows, feats, s, transcripts=args.transcripts,
                                 labels=labels, bert_path=args.bert_path, max_text=args.max_text_len,
                                 summary=summary)
    for name, reason in sorted(summary.failed.items()):
        print(f"failed: {name}: {reason}", file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    if info is not None:
        print(f"{args.layout} layout -> {args.out} ({info['clips']}; audio {info['feat_dims']['audio']}, "
              f"video {info['feat_dims']['video']} features)", file=sys.stderr)
    return 1 if summary.failed or info is None else 0


if __name__ == "__main__":
    sys.exit(main())
