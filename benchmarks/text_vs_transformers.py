"""Text fine-tuning: our ``text_only`` vs Hugging Face ``BertForSequenceClassification`` + ``torch.optim.AdamW``.

python -m benchmarks.text_vs_transformers --torch_python=/tmp/venv_torch/bin/python \
    [--n=1334 --batch_size=16 --threads=2 --rounds=3 --block=10 --torch_malloc=tuned --bert_dropout=threefry
     --guard=where --out=...]

Both sides: a random BERT of all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, FFN 1536, vocab
30522), 20 classes (MIntRec's intents), batch 16, AdamW with the settings of configs/text_only.py's default
preset (demo: lr 1e-3, weight decay 0.01, clip 1.0; the speed does not depend on them), dropout on;
``--n`` examples with MIntRec-like lengths (`benchmarks.padding`: mean ~14 tokens, max 48), the same
lengths on both sides. The torch side (`benchmarks.text_vs_transformers_torch`)
runs in its own interpreter with ``--threads`` threads and glibc's allocator tuned (``--torch_malloc``,
as `benchmarks.kuda_vs_official`); it pads each batch to its longest row (``DataCollatorWithPadding``).
Ours: the shared jitted train step, batches by the loader's code (`data/buckets.py` 'auto' buckets
from the lengths, batches grouped by bucket, `pipeline.collate`, `prefetch.to_device`); its BERT's dropout masks
from ``--bert_dropout`` (config.model.bert_dropout: 'threefry', text_only's default, or 'hashed'); its
non-finite guard from ``--guard`` (config.optimizer.guard, `grouped_update.GUARDS`: 'where', the default, 'cond' or
'select_after').

Measured INTERLEAVED (the sides alternate, the order flipping every round; the idle side waits on the
pipe): ``--rounds`` rounds of a ``--block``-step block per side (train-step examples/s = batch size x
steps / block time, cycling through one epoch's batches), then ``--rounds`` whole epochs per side
(data pipeline included: shuffle, collation, steps, all on the main thread). JSON lines to stdout and
``--out``; the summary has both medians and the ratios (ours over theirs in examples/s).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import emit_and_append, machine
from benchmarks.kuda_vs_official_torch import TORCH_MALLOC_CHOICES, TorchWorker
from benchmarks.padding import mintrec_like_lengths
from mmfuse_jax.encoders.bert import DROPOUT_IMPLS
from mmfuse_jax.training.grouped_update import GUARDS

DEFAULT_OUT = os.path.join("benchmarks", "results", "text_vs_transformers_cpu.jsonl")
MINILM = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
          "intermediate_size": 1536, "max_position_embeddings": 512}
NUM_CLASSES = 20


class Ours:
    """Our text_only train step and data path over the examples."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, bert_dropout: str = "threefry",
                 guard: str = "where"):
        import jax

        from benchmarks.train_step import load_config
        from mmfuse_jax import registry
        from mmfuse_jax.data import buckets
        from mmfuse_jax.encoders.bert import BertConfig
        from mmfuse_jax.training import sharding
        from mmfuse_jax.training import state as state_lib
        from mmfuse_jax.training import step as step_lib

        self.jax, self.buckets_lib, self.batch_size, self.seed = jax, buckets, batch_size, seed
        config = load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "text_only.py"))
        spec = registry.get("text_only")
        bert = BertConfig(**MINILM, dropout_impl=bert_dropout)
        self.model = spec.build(config.model, {"num_classes": NUM_CLASSES, "bert": bert})
        self.mesh = sharding.make_mesh()
        rng = np.random.default_rng(seed)
        self.rows = [{"text_ids": np.asarray([2, *rng.integers(5, MINILM["vocab_size"], n - 2), 3], np.int32),
                      "text_type_ids": np.zeros(n, np.int32), "label": int(rng.integers(NUM_CLASSES)),
                      "audio": np.zeros((1, 1), np.float32), "video": np.zeros((1, 1), np.float32)} for n in lengths]
        self.lengths = {"text": np.asarray(lengths)}
        self.buckets = [{**b, "audio": 1, "video": 1}
                        for b in buckets.auto_buckets(self.lengths, {"text": int(lengths.max())}, 4)]
        config.optimizer.guard = guard
        tx = state_lib.make_optimizer(config.optimizer, 10 ** 6)
        dummy = {k: jax.numpy.asarray(v) for k, v in self.collate(np.arange(batch_size), 0).items()}
        params = self.model.init(jax.random.PRNGKey(seed), dummy, train=False)["params"]
        self.state = state_lib.create(params, tx, seed)
        self.train_step = step_lib.make_train_step(self.model, spec.make_loss(config), tx, self.mesh,
                                                   update=state_lib.make_update(config.optimizer, 10 ** 6))
        self.batches = list(self.epoch_batches(0))
        self.i = 0

    def plan(self, epoch: int):
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        rows = self.buckets_lib.bucket_of(self.buckets, self.lengths)
        rng = np.random.default_rng([self.seed, epoch, 1])
        return self.buckets_lib.group_batches(order, rows, self.batch_size, rng)

    def collate(self, idx, bucket: int) -> dict:
        from mmfuse_jax.data import pipeline

        return pipeline.collate([self.rows[i] for i in idx], batch_size=self.batch_size, lens=self.buckets[bucket],
                                dims={"audio": 1, "video": 1})

    def epoch_batches(self, epoch: int):
        from mmfuse_jax.training import prefetch

        return prefetch.to_device((self.collate(idx, k) for idx, k in self.plan(epoch)), self.mesh)

    def padded_fraction(self) -> float:
        return self.buckets_lib.padded_fraction(self.plan(0), self.buckets, self.lengths, self.batch_size)["text"]

    def steps(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            batch = self.batches[self.i % len(self.batches)]
            self.i += 1
            t0 = time.perf_counter()
            self.state, m = self.train_step(self.state, batch)
            self.jax.block_until_ready(m["loss"])
            out.append(time.perf_counter() - t0)
        return out

    def epoch(self, epoch: int) -> dict:
        t0, n = time.perf_counter(), 0
        for batch in self.epoch_batches(epoch):
            self.state, m = self.train_step(self.state, batch)
            n += self.batch_size
        self.jax.block_until_ready(self.state.params)
        return {"epoch_s": time.perf_counter() - t0, "examples": len(self.rows)}

    def warm_up(self) -> None:
        """One step on a batch of every bucket shape, taken from the timed batches themselves (placed by
        the loader's `prefetch.to_device`, as the epochs place theirs), twice over: the first step takes
        the freshly created state, whose layout differs from the one every later step returns (one
        more compile of that bucket's shape), so no timed block compiles."""
        plan = self.plan(0)
        for k in 2 * sorted({k for _, k in plan}):
            batch = next(b for b, (_, kb) in zip(self.batches, plan) if kb == k)
            self.state, m = self.train_step(self.state, batch)
        self.jax.block_until_ready(m["loss"])


def _worker_config(a, lengths: np.ndarray) -> dict:
    from benchmarks.train_step import load_config

    opt = load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "text_only.py")).optimizer
    return {"threads": a.threads, "seed": a.seed, "bert": MINILM, "num_classes": NUM_CLASSES,
            "batch_size": a.batch_size, "lengths": [int(n) for n in lengths],
            "optimizer": {k: float(opt[k]) for k in ("lr", "b1", "b2", "eps", "weight_decay", "grad_clip")}}


def _interleave(a, ours: Ours, worker: TorchWorker, out) -> dict:
    """Step blocks, then whole epochs, alternating sides; {side: {"step": [...], "epoch": [...]}}."""
    res = {"ours": {"step": [], "epoch": []}, "transformers": {"step": [], "epoch": []}}
    for kind in ("step", "epoch"):
        for r in range(a.rounds):
            for side in (("ours", "transformers") if r % 2 == 0 else ("transformers", "ours")):
                if kind == "step":
                    times = ours.steps(a.block) if side == "ours" else worker.call(cmd="steps", n=a.block)["times_s"]
                    value = a.batch_size * len(times) / sum(times)
                else:
                    rep = ours.epoch(r + 1) if side == "ours" else worker.call(cmd="epoch", epoch=r + 1)
                    value = rep["examples"] / rep["epoch_s"]
                res[side][kind].append(value)
                out({"event": kind, "round": r, "side": side, "examples_per_s": value, "loadavg": os.getloadavg()})
    return res


def main(argv: list[str] | None = None) -> list[dict]:
    from mmfuse_jax import runtime

    host = runtime.tune_host()  # as our CLIs do (mmfuse_jax/runtime.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch_python", required=True, help="a Python with torch and transformers")
    p.add_argument("--n", type=int, default=1334, help="examples (MIntRec's train split size)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block", type=int, default=10, help="train steps per side per step block")
    p.add_argument("--warmup", type=int, default=3, help="untimed torch steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch_malloc", default="tuned", choices=TORCH_MALLOC_CHOICES)
    p.add_argument("--bert_dropout", default="threefry", choices=DROPOUT_IMPLS,
                   help="how our BERT draws its dropout masks (config.model.bert_dropout; default: text_only's)")
    p.add_argument("--guard", default="where", choices=GUARDS,
                   help="our step's non-finite guard (config.optimizer.guard; default: text_only's)")
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args(argv)
    run = {"bench": "text_vs_transformers", "run": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch_malloc": a.torch_malloc,
           "bert_dropout": a.bert_dropout, "guard": a.guard}
    records: list[dict] = []

    def out(rec: dict) -> None:
        records.append({**run, **rec})
        emit_and_append(records[-1], a.out)

    lengths = mintrec_like_lengths(a.n, 48, a.seed)
    worker = TorchWorker(a.torch_python, _worker_config(a, lengths),
                         os.path.join(tempfile.gettempdir(), "text_vs_transformers_worker.log"), a.torch_malloc,
                         script=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "text_vs_transformers_torch.py"))
    ours = Ours(lengths, a.batch_size, a.seed, a.bert_dropout, a.guard)
    ready = worker.reply()
    ours.warm_up()
    worker.call(cmd="steps", n=a.warmup)
    n_params = sum(x.size for x in ours.jax.tree_util.tree_leaves(ours.state.params))
    out({"event": "setup", "n": a.n, "batch_size": a.batch_size, "threads": a.threads,
         "mean_len": float(lengths.mean()),
         "ours_params": int(n_params), "transformers_params": ready["params"], "torch": ready["torch"],
         "transformers": ready["transformers"], "torch_threads": ready["threads"],
         "ours_buckets": [b["text"] for b in ours.buckets], "ours_padded_fraction": ours.padded_fraction(),
         "transformers_padded_fraction": ready["padded_fraction"],
         "ours_malloc_tuned": host["malloc_tuned"], "ours_cpu_inline": host["cpu_inline"],
         "ours_threefry_unrolled": host["threefry_unrolled"], "ours_gc_tuned": host["gc_tuned"]})
    res = _interleave(a, ours, worker, out)
    worker.close()
    med = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in res.items()}
    out({"event": "summary", "summary": True, "machine": machine(), "cores": os.cpu_count(),
         "ours_step_examples_per_s": med["ours"]["step"],
         "transformers_step_examples_per_s": med["transformers"]["step"],
         "ours_epoch_examples_per_s": med["ours"]["epoch"],
         "transformers_epoch_examples_per_s": med["transformers"]["epoch"],
         "ratio_step": med["ours"]["step"] / med["transformers"]["step"],
         "ratio_epoch": med["ours"]["epoch"] / med["transformers"]["epoch"]})
    return records


if __name__ == "__main__":
    main()
