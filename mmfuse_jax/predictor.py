"""Predictions from a trained run: `Predictor` (Python) and ``predict.py`` (JSON lines).

    from mmfuse_jax import Predictor
    p = Predictor.from_workdir("runs/a")
    p.predict("can you help me", audio=np.load("a.npy"), video=None)
    # {'label': 'Ask for help', 'probabilities': {...}, 'missing_modalities': ['video'], ...}

`Predictor.from_workdir` reads ``config.json`` and restores the best checkpoint; it builds the
model only (``loop.build(config, data=False)``: the config, the BERT config and the label list),
never the dataset. Text is tokenized with the checkpoint's tokenizer exactly as ``prepare`` does
(`pipeline.tokenize`); features are padded by `pipeline.collate`, so a Predictor's logits equal
``eval.py``'s for the same example (tested). Every call pads to the largest length bucket and to
``batch_size`` rows, so the model compiles once however many calls and lengths follow.

A missing modality is what the Batch contract says and training saw: zeros with an all-zero mask;
the output names it (``missing_modalities``). Open-intent datasets (``config.dataset.oos_label``,
MIntRec2.0): a prediction is out of scope when DOC rejects it, with the per-class thresholds that
``eval.py`` fitted on the training split for this checkpoint (``doc_thresholds.json``). Thresholds
are saved at evaluation time rather than fitted at load time so that loading needs no dataset; a
run without that file (or with one from another checkpoint) fits them once from the prepared
training split and saves them.

Output per example, by task: classification ``label`` + ``probabilities`` (softmax); open intent
adds ``out_of_scope``, ``in_scope_label``, ``doc_score`` and ``doc_threshold`` (``label`` is the OOS
name when rejected); regression ``score``; one binary decision per class (IEMOCAP) ``labels`` (the
positive classes) + ``probabilities`` (of each class being present).

One process: the examples are this process's rows of the mesh over its devices (as on one host).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmfuse_jax.errors import ConfigError, DataError

MODALITIES = ("audio", "video")


def _resolve(path: str, what: str) -> str:
    """``path`` as given (absolute or from the working directory), else from the repository root."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidate = os.path.join(repo, path)
    if os.path.exists(candidate):
        return candidate
    raise ConfigError(f"{what} {path!r} (from the run's config.json) not found from {os.getcwd()} or {repo}: "
                      f"pass its location (Predictor.from_workdir(..., bert_path=...) or predict.py --bert_path)")


def load_run_config(workdir: str):
    """The resolved config a run saved (``<workdir>/config.json``) as a ConfigDict."""
    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{path} not found: {workdir!r} is not a run folder (train.py writes config.json)")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    _check_identity(workdir, config)
    return config


def _check_identity(workdir: str, config) -> None:
    """The saved config must still be the one the run was trained with (its ``identity.json``)."""
    from mmfuse_jax.training import identity

    path = os.path.join(workdir, identity.IDENTITY_FILE)
    if not os.path.exists(path):
        return  # a run from before run identities were recorded
    with open(path) as f:
        saved = json.load(f)
    if saved.get("fingerprint") != identity.fingerprint(config):
        bad, _ = identity.differences(saved.get("fields", {}), identity.identity_fields(config))
        keys = ", ".join(k for k, *_ in bad[:4]) or "unknown fields"
        raise ConfigError(f"{workdir}/config.json no longer matches the run it describes ({keys} changed since "
                          "training): restore the original config.json")


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Predictor:
    """A trained run's model on new examples (see the module docstring)."""

    def __init__(self, config, exp, params, *, batch_size: int, tokenizer, doc_thresholds: np.ndarray | None,
                 checkpoint_step: int):
        from mmfuse_jax.data import pipeline
        from mmfuse_jax.training import experiment, sharding
        from mmfuse_jax.training import step as step_lib

        self.config, self.exp, self.params = config, exp, params
        self.labels = list(exp.labels)
        sharding.check_batch_size(batch_size, exp.mesh, "batch_size (Predictor)")
        self.batch_size, self.tokenizer, self.doc_thresholds = batch_size, tokenizer, doc_thresholds
        self.checkpoint_step = checkpoint_step
        ds = config.dataset
        self.dims = dict(ds.feat_dims)
        self.max_len = dict(ds.max_len)
        self.lens = pipeline.bucket_lengths(self.max_len, ds.num_buckets)[-1]  # one shape for every call
        self.label_shape = tuple(ds.get("label_shape", ()))
        self.counter = step_lib.TraceCounter()
        self._eval_step = experiment.make_eval_step(exp, counter=self.counter)
        from mmfuse_jax.data.formats import FORMATS

        self.oos_name = getattr(FORMATS[ds.format], "OOS_NAME", "OOS") if ds.get("oos_label") is not None else None

    # --------------------------------------------------------------------------- loading

    @classmethod
    def from_workdir(cls, workdir: str, *, batch_size: int | None = None, bert_path: str | None = None
                     ) -> Predictor:
        """Restore ``workdir``'s best checkpoint. ``batch_size`` (default: the config's
        ``eval_batch_size``) is the fixed number of rows per compiled call."""
        from mmfuse_jax.encoders.bert import load_tokenizer
        from mmfuse_jax.training import loop

        config = load_run_config(workdir)
        if bert_path is not None:
            config.dataset.bert_path = bert_path
        uses_text_ids = "text" not in config.dataset.feat_dims
        if config.dataset.bert_path or uses_text_ids:
            config.dataset.bert_path = _resolve(config.dataset.bert_path, "config.dataset.bert_path")
        exp = loop.build(config, data=False)
        params, meta = _restore_best(exp, workdir)
        tokenizer = load_tokenizer(config.dataset.bert_path) if uses_text_ids else None
        p = cls(config, exp.specialised(params), params, batch_size=batch_size or config.eval_batch_size,
                tokenizer=tokenizer, doc_thresholds=None, checkpoint_step=int(meta["step"]))
        if p.oos_name is not None:
            p.doc_thresholds = p._doc_thresholds(workdir)
        return p

    def _doc_thresholds(self, workdir: str) -> np.ndarray:
        from mmfuse_jax import ood
        from mmfuse_jax.training import loop

        saved = ood.load_doc_thresholds(workdir, self.checkpoint_step)
        if saved is not None:
            return saved
        print(f"{workdir}: no DOC thresholds saved for checkpoint step {self.checkpoint_step} (run eval.py to "
              "save them); fitting them on the training split now", file=sys.stderr)
        exp = loop.build(self.config)
        train = loop.predict_split(exp, self.params, "train", self._eval_step)
        scale = self.config.dataset.get("doc_scale", 1.0)
        thresholds = ood.fit_doc_thresholds(train["logits"], train["label"], scale)
        try:
            ood.save_doc_thresholds(workdir, thresholds, scale=scale, checkpoint_step=self.checkpoint_step)
        except OSError:
            pass  # a read-only run folder: fitted again next time
        return thresholds

    # --------------------------------------------------------------------------- inputs

    def _array(self, value: Any, key: str, where: str) -> np.ndarray:
        """A [T, D] float32 feature array from an array or a ``.npy`` path, checked."""
        dim = self.dims[key]
        if isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
            try:
                value = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise DataError(path, key, "a .npy feature file", "no such file") from None
            except (ValueError, OSError) as e:
                raise DataError(path, key, "a .npy file of numbers (no pickled objects)", str(e)) from None
            where = path
        x = np.asarray(value)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(where, key, f"a real-valued array [T, {dim}]", f"dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != dim or x.shape[0] == 0:
            raise DataError(where, key, f"features [T, {dim}] with T >= 1", f"shape {list(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise DataError(where, key, "finite values", f"{int(np.sum(~np.isfinite(x)))} NaN or inf")
        return x.astype(np.float32)

    def _row(self, ex: Mapping[str, Any], where: str) -> tuple[dict, dict]:
        """One example -> a prepared-style row for `pipeline.collate` and its notes."""
        from mmfuse_jax.data import pipeline

        if not isinstance(ex, Mapping):
            raise DataError(where, None, "an object with 'text' (and optionally 'audio', 'video')",
                            type(ex).__name__)
        unknown = sorted(set(ex) - {"text", "audio", "video", "id"})
        if unknown:
            raise DataError(where, f"keys {unknown}", "only 'text', 'audio', 'video', 'id'", "unknown keys")
        text = ex.get("text")
        row, truncated = {"label": np.zeros(self.label_shape)}, []
        if self.tokenizer is not None:
            if not isinstance(text, str):
                raise DataError(where, "text", "a string", type(text).__name__)
            ids, n = pipeline.tokenize([text], self.tokenizer, self.max_len["text"])
            row["text_ids"] = ids[0]
            truncated += ["text"] if n else []
        else:  # the feature path (e.g. GloVe text in the MulT pickles)
            if text is None:
                raise DataError(where, "text", f"text features [T, {self.dims['text']}] or a .npy path", "missing")
            row["text_feats"] = self._array(text, "text", where)
            row["text_ids"] = np.zeros((0,), np.int32)
            truncated += ["text"] if len(row["text_feats"]) > self.max_len["text"] else []
        row["text_type_ids"] = np.zeros_like(row["text_ids"])
        missing = []
        for m in MODALITIES:
            if ex.get(m) is None:
                row[m] = np.zeros((0, self.dims[m]), np.float32)  # all-zero mask: the Batch contract
                missing.append(m)
            else:
                row[m] = self._array(ex[m], m, where)
                truncated += [m] if len(row[m]) > self.max_len[m] else []
        return row, {"missing_modalities": missing, "truncated": truncated}

    # --------------------------------------------------------------------------- predictions

    def outputs(self, examples: Sequence[Mapping[str, Any]], *, where: str = "input"
                ) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Raw model outputs (``logits`` or ``prediction``, float32, one row per example) and the
        notes of each example (missing and truncated modalities)."""
        import jax

        from mmfuse_jax.data import pipeline
        from mmfuse_jax.training import sharding

        pairs = [self._row(ex, f"{where} #{i + 1}") for i, ex in enumerate(examples)]
        dims = dict(self.dims)
        outs: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(pairs), self.batch_size):
            rows = [r for r, _ in pairs[start:start + self.batch_size]]
            batch = pipeline.collate(rows, batch_size=self.batch_size, lens=self.lens, dims=dims,
                                     label_dtype=self.exp.label_dtype, label_shape=self.label_shape)
            res = jax.device_get(self._eval_step(self.params, sharding.to_global(batch, self.exp.mesh)))
            for k, v in res.items():
                if k != "embedding":
                    outs.setdefault(k, []).append(np.asarray(v)[: len(rows)])
        return {k: np.concatenate(v) for k, v in outs.items()}, [n for _, n in pairs]

    def predict_batch(self, examples: Sequence[Mapping[str, Any]], *, where: str = "input") -> list[dict]:
        """One result dict per example (each a mapping with ``text`` and optional ``audio``/``video``:
        arrays [T, D] or ``.npy`` paths; an ``id`` is copied to the result)."""
        if not examples:
            return []
        outs, notes = self.outputs(examples, where=where)
        results = []
        for i, note in enumerate(notes):
            res = {"id": examples[i]["id"]} if "id" in examples[i] else {}
            res.update(self._decide({k: v[i] for k, v in outs.items()}))
            res.update(note)
            results.append(res)
        return results

    def predict(self, text: Any, audio: Any = None, video: Any = None) -> dict:
        """One example: ``text`` (a string, or features on the feature path), ``audio``/``video``
        arrays [T, D] or ``.npy`` paths, or None when missing."""
        return self.predict_batch([{"text": text, "audio": audio, "video": video}])[0]

    def _declared(self, out: dict[str, np.ndarray]) -> dict:
        """The model's own eval outputs (`ModelSpec.eval_outputs`) that it emitted for this example,
        under `ModelSpec.result_keys` (default their names); one with `ModelSpec.output_labels` as a
        ``{label: value}`` mapping, others as lists."""
        spec, res = self.exp.spec, {}
        for name in spec.eval_outputs:
            if name not in out:
                continue
            value = np.asarray(out[name], np.float64)
            labels = spec.output_labels.get(name)
            if labels is not None and value.shape[-1:] == (len(labels),):
                res[spec.result_keys.get(name, name)] = {m: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist())
                                                         for m, v in zip(labels, np.moveaxis(value, -1, 0))}
            else:
                res[spec.result_keys.get(name, name)] = value.tolist()
        return res

    def _decide(self, out: dict[str, np.ndarray]) -> dict:
        if "prediction" in out:
            return {"score": float(np.asarray(out["prediction"]).reshape(-1)[0]), **self._declared(out)}
        logits = np.asarray(out["logits"], np.float64)
        names = self.labels if len(self.labels) >= logits.shape[0] else [str(i) for i in range(logits.shape[0])]
        if logits.ndim == 2:  # one binary decision per class (IEMOCAP: [4, 2])
            p = _softmax(logits)[:, 1]
            return {"labels": [names[h] for h in range(len(p)) if logits[h].argmax() == 1],
                    "probabilities": {names[h]: float(p[h]) for h in range(len(p))}}
        probs = _softmax(logits)
        best = int(probs.argmax())
        res = {"label": names[best], "probabilities": {names[c]: float(probs[c]) for c in range(len(probs))},
               **self._declared(out)}
        if self.doc_thresholds is not None:
            from mmfuse_jax import ood

            scores = ood.sigmoid(logits)
            top = int(scores.argmax())
            oos = bool(ood.doc_predict(logits[None], self.doc_thresholds, len(logits))[0] == len(logits))
            res.update({"label": self.oos_name if oos else names[top], "out_of_scope": oos,
                        "in_scope_label": names[best], "doc_score": float(scores[top]),
                        "doc_threshold": float(self.doc_thresholds[top])})
        return res


def _only_declared(params, declared):
    """``params`` without the subtrees ``declared`` (the model's init shapes) does not have; anything
    declared but missing stays missing, so the shape check below still names the mismatch."""
    if not isinstance(params, dict) or not isinstance(declared, dict):
        return params
    return {k: _only_declared(v, declared[k]) for k, v in params.items() if k in declared}


def _restore_best(exp, workdir: str) -> tuple[dict, dict]:
    """(params on ``exp``'s mesh, meta) of ``workdir``'s best checkpoint, checked against the model."""
    import jax

    from mmfuse_jax.training import sharding
    from mmfuse_jax.training.checkpoint import checkpoint_steps, read_checkpoint

    best = os.path.join(workdir, "best")
    if not checkpoint_steps(workdir, "best"):
        raise ConfigError(f"no best checkpoint in {best}: train first (train.py --workdir={workdir})")
    params, meta = read_checkpoint(workdir, "best")
    batch = {k: jax.numpy.asarray(v) for k, v in exp.dummy_batch().items()}
    shapes = jax.eval_shape(lambda k: exp.model.init(k, batch, train=False)["params"], jax.random.PRNGKey(0))
    # A loaded Hugging Face BERT brings parameters the model never calls (its pooler, when the model
    # pools itself): they are trained along as dead weights (KuDA), so keep only what the model declares.
    params = _only_declared(params, shapes)
    want = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), shapes)
    got = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), params)
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(got) or want != got:
        raise DataError(best, "params", "the parameters of the model config.json describes", "other names or shapes")
    return jax.device_put(params, sharding.replicated(exp.mesh)), meta


# ------------------------------------------------------------------------------- predict.py

def read_jsonl(path: str) -> list[dict]:
    """Examples of a JSON-lines file; relative ``.npy`` paths are taken from the file's folder."""
    if not os.path.exists(path):
        raise DataError(path, None, "a JSON-lines input file", "no such file")
    base, examples = os.path.dirname(os.path.abspath(path)), []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"line {n}", "one JSON object per line", str(e)) from None
            if not isinstance(ex, dict):
                raise DataError(path, f"line {n}", "a JSON object", type(ex).__name__)
            for m in ("text", "audio", "video", "media"):
                v = ex.get(m)
                if isinstance(v, str) and (v.endswith(".npy") or m == "media") and not os.path.isabs(v):
                    ex[m] = os.path.join(base, v)
            examples.append(ex)
    return examples


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    runtime.tune_host()  # before JAX starts its threads
    p = argparse.ArgumentParser(
        prog="predict.py", description="Predict with a trained run's best checkpoint: one JSON object per "
        'input line ({"text": ..., "audio": "a.npy", "video": "v.npy", "id": ...}; audio/video optional).')
    p.add_argument("--workdir", required=True, help="the run folder (config.json, best/)")
    p.add_argument("--input", default=None, help="JSON-lines file of examples (a 'media' path instead of "
                   "audio/video: features extracted with the run's recorded settings)")
    p.add_argument("--media", default=None, help="one media file (a run trained on `mmfuse_jax.extract` output)")
    p.add_argument("--text", default="", help="the transcript of --media")
    p.add_argument("--output", default="-", help="JSON-lines file to write (default: standard output)")
    p.add_argument("--batch_size", type=int, default=None, help="rows per compiled call (default: eval_batch_size)")
    p.add_argument("--bert_path", default=None, help="BERT/tokenizer folder if it moved since training")
    args = p.parse_args(argv)
    runtime.compilation_cache()  # after the arguments: --help creates no folder
    from mmfuse_jax import cli

    def run():
        if args.output != "-" and os.path.isdir(args.output):
            raise ConfigError(f"--output={args.output} is a directory: give a file to write the JSON lines to")
        if (args.input is None) == (args.media is None):
            raise ConfigError("give either --input=examples.jsonl or --media=clip.mp4 --text=...")
        examples = read_jsonl(args.input) if args.input else [{"media": args.media, "text": args.text}]
        predictor = Predictor.from_workdir(args.workdir, batch_size=args.batch_size, bert_path=args.bert_path)
        if any("media" in ex for ex in examples):
            from mmfuse_jax.extract import media

            examples = media.media_examples(examples, media.run_settings(predictor.config))
        results = predictor.predict_batch(examples, where=f"{args.input or args.media} example")
        lines = "".join(json.dumps(r) + "\n" for r in results)
        if args.output == "-":
            sys.stdout.write(lines)
        else:
            with open(args.output, "w") as f:
                f.write(lines)
            print(f"{len(results)} predictions -> {args.output}", file=sys.stderr)

    cli.run_user_facing(run)
