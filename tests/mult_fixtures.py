"""Small fixtures written in the official layouts of the MulT pickles, UR-FUNNY v2 and MUStARD.

Features carry a learnable signal: each example has a score s in [-1, 1]; every modality is
Gaussian noise plus s times a fixed pattern (text strongest), and the label is a function of s
(sentiment 3s, IEMOCAP emotion k "yes" iff s is in its quarter, humour / sarcasm s > 0).
"""
from __future__ import annotations

import json
import os
import pickle

import numpy as np


def _signal(rng, n, length, dim, s, strength):
    pattern = np.random.default_rng(dim * 7 + length).standard_normal(dim).astype(np.float32)
    return (rng.standard_normal((n, length, dim)) * 0.5 + strength * s[:, None, None] * pattern).astype(np.float32)


def mult_split(rng, n, *, name, lens, dims):
    s = rng.uniform(-1, 1, n).astype(np.float32)
    split = {"text": _signal(rng, n, lens[0], dims[0], s, 1.0), "audio": _signal(rng, n, lens[1], dims[1], s, 0.5),
             "vision": _signal(rng, n, lens[2], dims[2], s, 0.5)}
    if name == "iemocap":
        quarter = np.clip(((s + 1) * 2).astype(int), 0, 3)
        yes = (np.arange(4)[None] == quarter[:, None]).astype(int)  # emotion k present iff s in quarter k
        split["labels"] = np.eye(2, dtype=np.float32)[yes]          # one-hot (no, yes) per emotion
    else:
        split["labels"] = (3.0 * s).reshape(n, 1, 1)
        split["id"] = np.array([[f"vid{i}".encode(), b"0", b"1"] for i in range(n)])
    return split


def write_mult(root, *, name="mosi", aligned=False, sizes=(48, 16, 16), lens=(8, 10, 9), dims=(12, 5, 6),
               seed=0, mutate=None) -> str:
    """Write ``<root>/<file>_data[_noalign].pkl``; ``mutate(data)`` may break it for bad-input tests."""
    from mmfuse_jax.data.formats.mult import FILES

    rng = np.random.default_rng(seed)
    data = {split: mult_split(rng, n, name=name, lens=lens, dims=dims)
            for split, n in zip(("train", "valid", "test"), sizes)}
    if mutate is not None:
        mutate(data)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, FILES[name] + ("_data.pkl" if aligned else "_data_noalign.pkl"))
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def write_urfunny(root, *, sizes=(12, 4, 4), dims=(6, 81, 371), vocab=20, seed=0, mutate=None) -> str:
    """UR-FUNNY v2: data_folds, language_sdk, word_embedding_list, covarep/openface sdks, labels."""
    rng = np.random.default_rng(seed)
    words = rng.standard_normal((vocab, dims[0])).astype(np.float32)
    folds, language, covarep, openface, labels = {}, {}, {}, {}, {}
    next_id = 0
    for split, n in zip(("train", "dev", "test"), sizes):
        folds[split] = []
        for _ in range(n):
            key, next_id = next_id, next_id + 1
            folds[split].append(key)
            n_ctx = int(rng.integers(0, 3))
            lens = [int(rng.integers(2, 6)) for _ in range(n_ctx)] + [int(rng.integers(3, 8))]
            idx = [list(rng.integers(0, vocab, n_w)) for n_w in lens]
            language[key] = {"punchline_embedding_indexes": idx[-1], "context_embedding_indexes": idx[:-1],
                             "punchline_sentence": "a punchline", "context_sentences": ["ctx"] * n_ctx,
                             "punchline_intervals": [], "context_intervals": []}
            for table, dim in ((covarep, dims[1]), (openface, dims[2])):
                feats = [rng.standard_normal((n_w, dim)).astype(np.float32) for n_w in lens]
                table[key] = {"punchline_features": feats[-1], "context_features": feats[:-1]}
            labels[key] = float(rng.integers(0, 2))
    files = {"data_folds.pkl": folds, "language_sdk.pkl": language, "word_embedding_list.pkl": list(words),
             "covarep_features_sdk.pkl": covarep, "openface_features_sdk.pkl": openface,
             "humor_label_sdk.pkl": labels}
    if mutate is not None:
        mutate(files)
    os.makedirs(root, exist_ok=True)
    for name, obj in files.items():
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return root


def write_mustard(root, *, n=20, dims=(8, 283, 10), shows=("FRIENDS", "BBT"), seed=0, with_video=True,
                  mutate=None) -> str:
    """MUStARD data/: sarcasm_data.json, audio_features.p [283, T], resnet_pool5.hdf5, bert-output.jsonl,
    split_indices.p (5 folds)."""
    rng = np.random.default_rng(seed)
    keys = [f"{i // 3 + 1}_{i}" for i in range(n)]
    data = {k: {"utterance": f"utterance {i}", "speaker": "SHELDON", "context": ["hello"], "context_speakers": ["AMY"],
                "show": shows[i % len(shows)], "sarcasm": bool(i % 2)} for i, k in enumerate(keys)}
    audio = {k: rng.standard_normal((dims[1], int(rng.integers(8, 12)))).astype(np.float32) for k in keys}
    video = {k: rng.standard_normal((int(rng.integers(3, 7)), dims[2])).astype(np.float32) for k in keys}
    lines = []
    for i in range(n):
        toks = [{"token": t, "layers": [{"index": -j, "values": rng.standard_normal(dims[0]).round(4).tolist()}
                                        for j in range(1, 5)]} for t in ["[CLS]"] + ["w"] * (i % 4 + 1) + ["[SEP]"]]
        lines.append({"linex_index": i, "features": toks})
    order = rng.permutation(n)
    folds = [(np.setdiff1d(np.arange(n), order[f::5]), np.sort(order[f::5])) for f in range(5)]
    files = {"json": data, "audio": audio, "video": video, "bert": lines, "folds": folds}
    if mutate is not None:
        mutate(files)
    os.makedirs(os.path.join(root, "features", "utterances_final"), exist_ok=True)
    with open(os.path.join(root, "sarcasm_data.json"), "w") as f:
        json.dump(files["json"], f)
    with open(os.path.join(root, "audio_features.p"), "wb") as f:
        pickle.dump(files["audio"], f, protocol=2)
    with open(os.path.join(root, "split_indices.p"), "wb") as f:
        pickle.dump(files["folds"], f, protocol=2)
    with open(os.path.join(root, "bert-output.jsonl"), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in files["bert"])
    if with_video:
        import h5py

        with h5py.File(os.path.join(root, "features", "utterances_final", "resnet_pool5.hdf5"), "w") as f:
            for k, v in files["video"].items():
                f.create_dataset(k, data=v)
    return root


def load_config(model: str, preset: str):
    """``configs/<model>.py:<preset>``."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"cfg_{model}", os.path.join(root, "configs", f"{model}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def feature_batch(ds, *, lens=(7, 11, 5), valid_lens=((7, 4, 2), (11, 6, 1), (5, 2, 3)), seed=0):
    """A Batch on the feature path for dataset config ``ds`` (B = 3, the last row padding)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    b = len(valid_lens[0])
    batch = {"text_ids": np.zeros((b, lens[0]), np.int32), "text_type_ids": np.zeros((b, lens[0]), np.int32),
             "valid": np.array([1.0] * (b - 1) + [0.0], np.float32)}
    for m, length, vl in zip(("text", "audio", "video"), lens, valid_lens):
        mask = (np.arange(length)[None] < np.asarray(vl)[:, None]).astype(np.int32)
        x = rng.standard_normal((b, length, ds.feat_dims[m])).astype(np.float32) * mask[..., None]
        batch[m], batch[f"{m}_mask"] = x, mask
    if ds.task == "regression":
        batch["label"] = rng.uniform(-3, 3, b).astype(np.float32)
    elif tuple(ds.get("label_shape", ())):
        batch["label"] = rng.integers(0, 2, (b, *ds.label_shape)).astype(np.int32)
    else:
        batch["label"] = rng.integers(0, 2, b).astype(np.int32)
    return {k: jnp.asarray(v) for k, v in batch.items()}


def split_batch(split: dict, idx, name: str) -> dict:
    """A full-length feature Batch from rows ``idx`` of a MulT split (as `mult_split` makes)."""
    import jax.numpy as jnp

    x = {m: split[k][idx] for m, k in (("text", "text"), ("audio", "audio"), ("video", "vision"))}
    n = len(idx)
    batch = {"text_ids": np.zeros((n, x["text"].shape[1]), np.int32), "valid": np.ones(n, np.float32)}
    batch["text_type_ids"] = batch["text_ids"]
    for m, v in x.items():
        batch[m], batch[f"{m}_mask"] = v, np.ones(v.shape[:2], np.int32)
    labels = split["labels"][idx]
    batch["label"] = labels.argmax(-1).astype(np.int32) if name == "iemocap" else labels.reshape(n)
    return {k: jnp.asarray(v) for k, v in batch.items()}
