"""The torch side of `benchmarks.text_vs_transformers`, run under its own interpreter (``--torch_python``;
nothing of this repository is imported): what people run today to fine-tune a BERT classifier.

Hugging Face ``BertForSequenceClassification`` (random weights of the configured shape), ``torch.optim.AdamW``,
gradient clipping at the config's norm, and a ``torch.utils.data.DataLoader`` (shuffled, batch 16) whose
``collate_fn`` is ``transformers.DataCollatorWithPadding`` (dynamic padding: each batch padded to its
longest row) over pre-tokenized examples. One JSON command per line in, one JSON reply per line out:
``steps`` (n train steps over collated batches, cycling; their wall times) and ``epoch`` (a whole
shuffled epoch: loader, collation and steps; its wall time).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time


class _Side:
    def __init__(self, cfg: dict):
        import numpy as np
        import torch
        from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, DataCollatorWithPadding

        torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        self.torch, self.cfg = torch, cfg
        bert = BertConfig(**cfg["bert"], num_labels=cfg["num_classes"])
        self.model = BertForSequenceClassification(bert)
        self.model.train()
        opt = cfg["optimizer"]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opt["lr"], betas=(opt["b1"], opt["b2"]),
                                           eps=opt["eps"], weight_decay=opt["weight_decay"])
        with tempfile.TemporaryDirectory() as d:
            vocab = os.path.join(d, "vocab.txt")
            with open(vocab, "w") as f:
                f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                  + [f"w{i}" for i in range(bert.vocab_size - 5)]) + "\n")
            tokenizer = BertTokenizerFast(vocab_file=vocab)
        self.collator = DataCollatorWithPadding(tokenizer)
        rng = np.random.default_rng(cfg["seed"])
        self.examples = [{"input_ids": [2, *rng.integers(5, bert.vocab_size, n - 2).tolist(), 3],
                          "token_type_ids": [0] * n, "attention_mask": [1] * n,
                          "labels": int(rng.integers(cfg["num_classes"]))}
                         for n in cfg["lengths"]]
        self.batches = list(self.loader(0))
        self.i = 0

    def loader(self, epoch: int):
        g = self.torch.Generator()
        g.manual_seed(self.cfg["seed"] * 1000 + epoch)
        return self.torch.utils.data.DataLoader(self.examples, batch_size=self.cfg["batch_size"], shuffle=True,
                                                collate_fn=self.collator, generator=g, num_workers=0)

    def step(self, batch) -> None:
        loss = self.model(**batch).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["optimizer"]["grad_clip"])
        self.optimizer.step()
        self.optimizer.zero_grad()

    def steps(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            batch = self.batches[self.i % len(self.batches)]
            self.i += 1
            t0 = time.perf_counter()
            self.step(batch)
            out.append(time.perf_counter() - t0)
        return out

    def epoch(self, epoch: int) -> dict:
        t0, n = time.perf_counter(), 0
        for batch in self.loader(epoch):
            self.step(batch)
            n += int(batch["input_ids"].shape[0])
        return {"epoch_s": time.perf_counter() - t0, "examples": n}


def worker_main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr
    cfg = json.loads(sys.stdin.readline())
    import torch
    import transformers

    side = _Side(cfg)
    reply = lambda rec: (out.write(json.dumps(rec) + "\n"), out.flush())
    pads = [int(b["input_ids"].numel() - b["attention_mask"].sum()) for b in side.batches]
    reply({"ready": True, "torch": torch.__version__, "transformers": transformers.__version__,
           "threads": torch.get_num_threads(), "params": sum(p.numel() for p in side.model.parameters()),
           "padded_fraction": sum(pads) / sum(int(b["input_ids"].numel()) for b in side.batches)})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "steps":
            reply({"times_s": side.steps(cmd["n"])})
        elif cmd["cmd"] == "epoch":
            reply(side.epoch(cmd["epoch"]))
        elif cmd["cmd"] == "quit":
            reply({"bye": True})
            return


if __name__ == "__main__":
    worker_main()
