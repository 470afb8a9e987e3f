"""The torch side of `benchmarks.kuda_vs_official`: the worker that runs the official KuDA PyTorch code
in its own interpreter (``--torch_python``; no JAX, nothing of this repository imported), and the client
(`TorchWorker`) that starts it and talks to it over a pipe, one JSON command per line in, one JSON reply
per line out. See `benchmarks.kuda_vs_official` for what is edited in the official code, and why.

``--torch_malloc``: ``tuned`` starts the worker with glibc's allocator kept off mmap (`TUNED_MALLOC_ENV`:
large blocks are reused from the heap instead of mapped and unmapped every step), ``plain`` without those
variables (removed from the worker's environment if this process has them).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

# glibc malloc tunables for --torch_malloc=tuned (see the module docstring).
TUNED_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000",
                    "MALLOC_TOP_PAD_": "1000000000"}
TORCH_MALLOC_CHOICES = ("tuned", "plain")


# (official file, old, new): literal edits of the official sources, applied in memory (see `kuda_vs_official`).
def official_patches(bert_hidden: int, taps: list[int], device: str = "cpu") -> list[tuple[str, str, str]]:
    return [
        ("models/Encoder_KIAdapter.py", "proj_fea_dim = 768", f"proj_fea_dim = {bert_hidden}"),
        ("models/Encoder_KIAdapter.py", "proj_fea_dim=768", f"proj_fea_dim={bert_hidden}"),
        ("models/Encoder_KIAdapter.py", "zip([3, 6, 9, 11], self.adapters)", f"zip({list(taps)}, self.adapters)"),
        ("models/Encoder_KIAdapter.py", "if n == 3:", f"if n == {taps[0]}:"),
        ("models/Encoder_KIAdapter.py", ".cuda()", "" if device == "cpu" else ".cuda()"),
        ("models/DyRoutFusion_CLS.py", "768*2", f"{bert_hidden}*2"),
    ]


# =============================================================================== torch worker (no JAX)

def _load_official(repo: str, patches):
    """Execute the official models/ and core/utils.py from ``repo`` with ``patches``; returns OverallModal."""
    import importlib.util
    import types

    import torch

    def encoder_forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        output, hidden = src, [src]
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask)
            hidden.append(output)
        if self.norm is not None:
            output = self.norm(output)
        return output, hidden

    torch.nn.TransformerEncoder.forward = encoder_forward  # official README, note 1
    sys.path.insert(0, repo)
    for pkg in ("models", "core"):
        sys.modules[pkg] = types.ModuleType(pkg)
        sys.modules[pkg].__path__ = [os.path.join(repo, pkg)]
    for rel in ("core/utils.py", "models/Encoder_KIAdapter.py", "models/DyRoutFusion_CLS.py",
                "models/OverallModal.py"):
        with open(os.path.join(repo, rel)) as f:
            src = f.read()
        for file, old, new in patches:
            if file == rel:
                if old not in src:
                    raise RuntimeError(f"{rel}: expected {old!r} (is --official_dir at commit e60ef6b?)")
                src = src.replace(old, new)
        name = rel[:-3].replace("/", ".")
        mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
        mod.__file__ = os.path.join(repo, rel)
        exec(compile(src, mod.__file__, "exec"), mod.__dict__)  # noqa: S102  (the official code, edited)
        sys.modules[name] = mod
    return sys.modules["models.OverallModal"]


class _OfficialStep:
    """The official KMSA model, AdamW and random bench-shaped batches; ``step()`` = one train.py step."""

    def __init__(self, cfg: dict):
        import types

        import numpy as np
        import torch
        from transformers import BertConfig, BertModel

        torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        self.torch = torch
        bert_cfg = cfg["bert"]
        overall = _load_official(cfg["official_dir"], official_patches(bert_cfg["hidden_size"], cfg["taps"],
                                                                       cfg.get("device", "cpu")))
        lt, lv, la = cfg["lens"]
        with tempfile.TemporaryDirectory() as bert_dir:
            BertModel(BertConfig(**bert_cfg)).save_pretrained(bert_dir)
            with open(os.path.join(bert_dir, "vocab.txt"), "w") as f:
                f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                  [f"w{i}" for i in range(bert_cfg["vocab_size"] - 5)]) + "\n")
            opt = types.SimpleNamespace(seq_lens=[lt, lv, la], hidden_size=cfg["hidden"], ffn_size=cfg["ffn"],
                                        fusion_layers=3, dropout=0.3)  # opts.py (the last two are unused)
            self.model = overall.KMSA(opt, dataset="sims", bert_pretrained=bert_dir)
        for name, p in self.model.UniEncKI.named_parameters():  # preprocess_model, minus the checkpoints
            if cfg["freeze"] and ("adapter" in name or "decoder" in name):
                p.requires_grad = False
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.loss_fn = torch.nn.MSELoss()
        self.model.train()
        rng = np.random.default_rng(cfg["seed"])
        b, vocab = cfg["batch_size"], bert_cfg["vocab_size"]
        self.batches = []
        for _ in range(4):
            text = np.zeros((b, 3, lt), np.float32)
            n_t = rng.integers(4, lt + 1, b)
            text[:, 0] = rng.integers(5, vocab, (b, lt)) * (np.arange(lt) < n_t[:, None])
            text[:, 1] = np.arange(lt) < n_t[:, None]
            n_v, n_a = rng.integers(cfg["min_lens"][1], lv + 1, b), rng.integers(cfg["min_lens"][2], la + 1, b)
            self.batches.append({
                "T": torch.from_numpy(text),
                "V": torch.from_numpy(rng.standard_normal((b, lv, cfg["feat_dims"][0])).astype(np.float32)),
                "A": torch.from_numpy(rng.standard_normal((b, la, cfg["feat_dims"][1])).astype(np.float32)),
                "mask_V": torch.from_numpy(np.arange(lv)[None] >= n_v[:, None]),  # True = padding
                "mask_A": torch.from_numpy(np.arange(la)[None] >= n_a[:, None]),
                "label": torch.from_numpy(rng.uniform(-1, 1, (b, 1)).astype(np.float32))})
        self.i = 0
        self.device = torch.device(cfg.get("device", "cpu"))  # cuda: model and batches on the GPU
        self.bf16 = bool(cfg.get("bf16"))  # torch.autocast to bfloat16 (forward and loss), AdamW in float32
        self.model.to(self.device)
        self.batches = [{k: v.to(self.device) for k, v in b.items()} for b in self.batches]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def step(self) -> tuple[float, float]:
        """(wall, process CPU) seconds of one step."""
        data = self.batches[self.i % len(self.batches)]
        self.i += 1
        t0, c0 = time.perf_counter(), time.process_time()
        inputs = {"V": data["V"], "A": data["A"], "T": data["T"],
                  "mask": {"V": data["mask_V"], "A": data["mask_A"], "T": []}}  # train.py builds it per batch
        label = data["label"]
        with self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=self.bf16):
            output, nce_loss = self.model(inputs, label.clone().detach())
            loss = self.loss_fn(output.float(), label) + 0.1 * nce_loss
        loss.item()  # train.py: losses.update(loss.item(), batchsize)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    def matmul_peak(self, n: int = 2048) -> float:
        dtype = self.torch.bfloat16 if self.bf16 else self.torch.float32
        a = self.torch.ones((n, n), dtype=dtype, device=self.device)
        sync = self.torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        for _ in range(2):
            a @ a
        sync()
        best = min(_timed(lambda: (a @ a, sync())) for _ in range(5))
        return 2 * n ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def worker_main() -> None:
    """Serve JSON commands on stdin, one reply per line on stdout (stdout carries nothing else)."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the official code or transformers prints goes to stderr
    cfg = json.loads(sys.stdin.readline())
    import torch

    official = _OfficialStep(cfg)
    reply = lambda rec: (out.write(json.dumps(rec) + "\n"), out.flush())
    reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "params": official.n_params, "trainable_params": official.n_trainable})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "steps":
            wall, cpu = zip(*[official.step() for _ in range(cmd["n"])])
            reply({"times_s": list(wall), "cpu_s": list(cpu), "loadavg": os.getloadavg()})
        elif cmd["cmd"] == "matmul_peak":
            reply({"matmul_peak_flops_per_s": official.matmul_peak()})
        elif cmd["cmd"] == "quit":
            reply({"bye": True})
            return


# =============================================================================== client (driver side)

def worker_env(threads: int, torch_malloc: str) -> dict[str, str]:
    """The worker's environment: this one, no PYTHONPATH, ``--threads`` OpenMP threads, malloc per ``torch_malloc``."""
    if torch_malloc not in TORCH_MALLOC_CHOICES:
        raise ValueError(f"torch_malloc must be one of {TORCH_MALLOC_CHOICES}, not {torch_malloc!r}")
    env = dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS=str(threads))
    for key in TUNED_MALLOC_ENV:
        env.pop(key, None)
    if torch_malloc == "tuned":
        env.update(TUNED_MALLOC_ENV)
    return env


class TorchWorker:
    """The torch worker subprocess: one JSON command per line in, one JSON reply per line out."""

    def __init__(self, torch_python: str, cfg: dict, log_path: str, torch_malloc: str = "tuned",
                 script: str = __file__):
        """``script``: the worker's file (this one; `benchmarks.text_vs_transformers_torch` for text)."""
        self.log = open(log_path, "w")  # noqa: SIM115  (the worker's stderr, open while it lives)
        env = worker_env(cfg["threads"], torch_malloc)
        self.proc = subprocess.Popen([torch_python, os.path.abspath(script), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            with open(self.log.name) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"the torch worker stopped (exit {self.proc.wait()}); its stderr ends:\n{tail}")
        return json.loads(line)

    def call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.call(cmd="quit")
            self.proc.wait(timeout=60)
        self.log.close()


if __name__ == "__main__":
    worker_main()
