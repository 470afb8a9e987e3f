"""KuDA stage-2 train step: ours (JAX, `configs/kuda.py:bench`) vs the official PyTorch code, same machine.

python -m benchmarks.kuda_vs_official --official_dir=/tmp/KuDA --torch_python=/tmp/torchenv/bin/python \
    [--config=configs/kuda.py:bench --steps=10 --warmup=3 --block=2 --threads=2 --out=benchmarks/results/...]

The official side runs in a worker subprocess under ``--torch_python`` (a Python with torch,
transformers, einops, scipy, tabulate). The worker reads the official sources from ``--official_dir``
(github:MKMaS-GUET/KuDA @ e60ef6b) at run time, applies the literal edits below, executes them and builds
``KMSA`` with the bench sizes; nothing of the official code is copied into this repository. What had to
be changed or stubbed, and why:
  * BERT: no hub here, so a random ``transformers.BertModel`` of the bench size (the config.json of the
    bench's synthetic BERT: 6 layers, 384 hidden, 12 heads, FFN 1536, its vocabulary) is saved to a temp
    folder with a vocab.txt, and the official ``from_pretrained`` calls load it;
  * sizes: ``proj_fea_dim = 768`` / ``768*2`` -> the BERT width (384), and the adapter taps
    ``[3, 6, 9, 11]`` of a 12-layer BERT -> ``kuda.default_taps(6)`` = [1, 3, 4, 5] (ours, same rule);
  * ``.cuda()`` dropped (CPU); ``nn.TransformerEncoder.forward`` returns ``(output, hidden_states)`` as
    the official README (note 1) asks;
  * stage-1 checkpoints: not loaded (random weights); ``preprocess_model``'s freezing is applied
    (``requires_grad=False`` for 'adapter'/'decoder' parameters), as in train.py's stage 2.
The timed official step is train.py's loop body: forward with the label (ratio path), MSE + 0.1 NCE,
``loss.item()``, ``backward``, ``AdamW.step`` (lr 3e-5, wd 1e-5), ``zero_grad``; inputs are random arrays of
the bench shapes (text ids/mask/segments [B, 3, 39], video [B, 55, 709], audio [B, 400, 33], padding masks).
Our side is `benchmarks.train_step`'s machinery: the shared jitted train step (donated state) on the
bench's own batches, the same stage-2 freezing (the ``frozen`` list of KuDA's final stage).

Both sides are timed INTERLEAVED: blocks of ``--block`` steps alternate between JAX (in this process)
and the torch worker (over a pipe; the idle side waits on the pipe, so they never run at once), the
order flipping every round, so load from other jobs on the machine hits both alike. Both use
``--threads`` cores (torch.set_num_threads; XLA's CPU client uses every core of the machine, which is
checked to equal ``--threads``). Each step's wall time and process CPU time are recorded.

Output: JSON lines (setup, warm-up, one per block, then a summary), also appended to ``--out``, each
with the run's start time and git commit (``run``, ``git``). The summary has the median/min step
times, ``ratio_official_over_ours`` (of the medians), the compile count after warm-up and at the end
(must stay 1: one length bucket), and MFU = FLOPs / median step time / the float32 matmul peak of XLA
(2048^3, `benchmarks.train_step.matmul_peak_flops`) measured in this run (the higher of a measurement
before and after the timed rounds; torch's own matmul peak is reported beside it). FLOPs:
``flops_per_step`` is XLA's cost analysis of the compiled step, as `benchmarks.train_step` reports it,
but of the step with the chunked attention scans off (XLA counts a loop body once, not once per trip;
this also leaves out the backward pass's recompute); ``matmul_flops_per_step`` counts the dot
products alone (``mfu_matmul_only``); ``xla_flops_compiled_step`` is the raw count of the program
that runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_OUT = os.path.join("benchmarks", "results", "kuda_vs_official_cpu.jsonl")

# (official file, old, new): literal edits of the official sources, applied in memory (see the docstring).
def official_patches(bert_hidden: int, taps: list[int]) -> list[tuple[str, str, str]]:
    return [
        ("models/Encoder_KIAdapter.py", "proj_fea_dim = 768", f"proj_fea_dim = {bert_hidden}"),
        ("models/Encoder_KIAdapter.py", "proj_fea_dim=768", f"proj_fea_dim={bert_hidden}"),
        ("models/Encoder_KIAdapter.py", "zip([3, 6, 9, 11], self.adapters)", f"zip({list(taps)}, self.adapters)"),
        ("models/Encoder_KIAdapter.py", "if n == 3:", f"if n == {taps[0]}:"),
        ("models/Encoder_KIAdapter.py", ".cuda()", ""),
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
        overall = _load_official(cfg["official_dir"], official_patches(bert_cfg["hidden_size"], cfg["taps"]))
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
        output, nce_loss = self.model(inputs, label.clone().detach())
        loss = self.loss_fn(output, label) + 0.1 * nce_loss
        loss.item()  # train.py: losses.update(loss.item(), batchsize)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return time.perf_counter() - t0, time.process_time() - c0

    def matmul_peak(self, n: int = 2048) -> float:
        a = self.torch.ones((n, n))
        for _ in range(2):
            a @ a
        best = min(_timed(lambda: a @ a) for _ in range(5))
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


# =============================================================================== driver (JAX)

class _Worker:
    """The torch worker subprocess: one JSON command per line in, one JSON reply per line out."""

    def __init__(self, torch_python: str, cfg: dict, log_path: str):
        self.log = open(log_path, "w")  # noqa: SIM115  (the worker's stderr, open while it lives)
        env = dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS=str(cfg["threads"]))
        self.proc = subprocess.Popen([torch_python, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
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


def _git_commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), or '' outside git."""
    try:
        def git(*a):
            return subprocess.run(["git", *a], check=False, capture_output=True, text=True, timeout=10,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def _ours(config, steps_total: int):
    """`benchmarks.train_step.run`'s setup: the shared jitted train step, its state, the bench batches."""
    import jax

    from benchmarks.train_step import setup
    from mmfuse_jax.layers import heads_first
    from mmfuse_jax.training import step as step_lib

    exp, _, tx, st, train_step, counter, batches = setup(config, steps_total)
    t0 = time.perf_counter()
    flops = {"compiled": _xla_flops(train_step, st, batches[0]), "compile_s": time.perf_counter() - t0}
    # Model FLOPs (the MFU numerator): XLA counts a loop body once, not once per trip, so the step is
    # costed with the chunked attention scans turned off (`layers.heads_first.ATTENTION_CHUNK_BYTES`); this also
    # leaves out the backward pass's recompute of the probabilities, as MFU conventionally does.
    chunk_bytes = heads_first.ATTENTION_CHUNK_BYTES
    heads_first.ATTENTION_CHUNK_BYTES = 2 ** 62
    try:
        unchunked = step_lib.make_train_step(exp.model, exp.spec.make_loss(exp.config), tx, exp.mesh,
                                             compute_dtype=exp.compute_dtype)
        flops["model"] = _xla_flops(unchunked, st, batches[0])
        flops["matmul"] = _matmul_flops(unchunked, st, batches[0])
    finally:
        heads_first.ATTENTION_CHUNK_BYTES = chunk_bytes
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(st.params))
    return exp, st, train_step, counter, batches, flops, n_params


def _xla_flops(jitted, *args) -> float | None:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0)) or None


def _matmul_flops(fn, *args) -> float:
    """2 M N K summed over every ``dot_general`` of the traced step (forward, backward; a scan body
    times its length): the matrix-multiply FLOPs alone, the strictest MFU numerator."""
    import math

    import jax

    def walk(jaxpr, mult: int) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
                total += mult * 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
            inner = mult * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else (value,):
                    if hasattr(sub, "consts") and hasattr(sub, "jaxpr"):  # ClosedJaxpr
                        total += walk(sub.jaxpr, inner)
                    elif hasattr(sub, "eqns"):  # Jaxpr
                        total += walk(sub, inner)
        return total

    return walk(jax.make_jaxpr(fn)(*args).jaxpr, 1)


def _worker_config(config, exp, args) -> dict:
    import dataclasses

    bert = exp.model.bert
    ds, m = config.dataset, config.model
    syn = dict(ds.get("synthetic", {}))  # the synthetic generator's spec (empty for a real dataset)
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "layer_norm_eps", "pad_token_id")
    return {"official_dir": os.path.abspath(args.official_dir), "threads": args.threads, "seed": args.seed,
            "bert": {k: v for k, v in dataclasses.asdict(bert).items() if k in keys}, "taps": list(exp.model.taps),
            "lens": [m.text_len, m.video_len, m.audio_len],
            "min_lens": [4, (syn.get("video_len") or [m.video_len])[0], (syn.get("audio_len") or [m.audio_len])[0]],
            "feat_dims": [ds.feat_dims.video, ds.feat_dims.audio], "hidden": m.hidden, "ffn": m.ffn,
            "lr": config.optimizer.lr, "weight_decay": config.optimizer.weight_decay,
            "freeze": bool(exp.spec.stages(config)[-1].frozen), "batch_size": config.batch_size}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official_dir", required=True, help="a checkout of github:MKMaS-GUET/KuDA (e60ef6b)")
    p.add_argument("--torch_python", required=True, help="a Python with torch, transformers, einops, scipy, tabulate")
    p.add_argument("--config", default="configs/kuda.py:bench")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side (ours: includes the compile)")
    p.add_argument("--block", type=int, default=2, help="steps per side before switching to the other side")
    p.add_argument("--threads", type=int, default=2, help="cores per side (torch.set_num_threads)")
    p.add_argument("--seed", type=int, default=0, help="the official side's init and random inputs")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON lines appended here ('' = stdout only)")
    args = p.parse_args(argv)

    import jax

    from benchmarks.common import emit, machine
    from benchmarks.train_step import load_config, matmul_peak_flops

    records: list[dict] = []

    run = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "git": _git_commit()}

    def out(rec: dict) -> None:
        rec = {"bench": "kuda_vs_official", **run, **rec}
        emit(rec)
        records.append(rec)

    ncpu = os.cpu_count()
    if args.threads != ncpu:  # XLA's CPU client uses every core; torch gets --threads
        print(f"warning: --threads={args.threads} but the machine has {ncpu} cores (XLA uses all of them)",
              file=sys.stderr)
    config = load_config(args.config)
    t_start = time.perf_counter()
    exp, st, train_step, counter, batches, flops_xla, n_params = _ours(config, args.warmup + args.steps)
    flops, matmul_flops = flops_xla["model"], flops_xla["matmul"]
    log_path = os.path.join(tempfile.gettempdir(), "kuda_vs_official_worker.log")
    worker = _Worker(args.torch_python, _worker_config(config, exp, args), log_path)
    ready = worker.reply()
    peak_start = matmul_peak_flops()
    out({"event": "setup", "config": args.config, "batch_size": config.batch_size, "threads": args.threads,
         "our_params": int(n_params), "official_params": ready["params"],
         "official_trainable_params": ready["trainable_params"], "torch": ready["torch"],
         "torch_threads": ready["threads"], "compile_s": flops_xla["compile_s"], "flops_per_step": flops,
         "matmul_flops_per_step": matmul_flops, "xla_flops_compiled_step": flops_xla["compiled"],
         "matmul_peak_flops_per_s": peak_start, "worker_log": log_path, "loadavg": os.getloadavg()})

    i = 0

    def run_ours(n: int) -> tuple[list[float], list[float]]:
        nonlocal st, i
        wall, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            st, metrics = train_step(st, batches[i % len(batches)])
            jax.block_until_ready(metrics["loss"])
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            i += 1
        return wall, cpu

    warm_ours, _ = run_ours(args.warmup)  # the first step compiles
    compiles_after_warmup = counter.count
    warm_official = worker.call(cmd="steps", n=args.warmup)["times_s"]
    out({"event": "warmup", "ours_s": warm_ours, "official_s": warm_official, "loadavg": os.getloadavg()})

    times = {"ours": [], "official": []}
    cpu = {"ours": [], "official": []}
    rounds = -(-args.steps // args.block)
    for r in range(rounds):
        n = min(args.block, args.steps - r * args.block)
        for side in (("ours", "official") if r % 2 == 0 else ("official", "ours")):
            if side == "ours":
                wall, c = run_ours(n)
            else:
                rep = worker.call(cmd="steps", n=n)
                wall, c = rep["times_s"], rep["cpu_s"]
            times[side] += wall
            cpu[side] += c
            out({"event": "block", "round": r, "side": side, "step_s": wall, "cpu_s": c, "loadavg": os.getloadavg()})
    peak_end = matmul_peak_flops()
    official_peak = worker.call(cmd="matmul_peak")["matmul_peak_flops_per_s"]
    worker.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    mn = {k: min(v) for k, v in times.items()}
    peak = max(peak_start, peak_end)
    out({"event": "summary", "summary": True, "config": args.config, "batch_size": config.batch_size,
         "compute_dtype": config.compute_dtype, "threads": args.threads, "steps": args.steps, "block": args.block,
         "ours_step_median_s": med["ours"], "ours_step_min_s": mn["ours"],
         "official_step_median_s": med["official"], "official_step_min_s": mn["official"],
         "ratio_official_over_ours": med["official"] / med["ours"],
         "ratio_official_over_ours_min": mn["official"] / mn["ours"],
         "ours_cpu_median_s": statistics.median(cpu["ours"]),
         "official_cpu_median_s": statistics.median(cpu["official"]),
         "flops_per_step": flops, "matmul_flops_per_step": matmul_flops,
         "xla_flops_compiled_step": flops_xla["compiled"], "matmul_peak_flops_per_s": peak,
         "matmul_peak_start_end": [peak_start, peak_end], "torch_matmul_peak_flops_per_s": official_peak,
         "mfu": flops / med["ours"] / peak if flops else None,
         "mfu_best_step": flops / mn["ours"] / peak if flops else None,
         "mfu_matmul_only": matmul_flops / med["ours"] / peak,
         "official_mfu_same_flops": flops / med["official"] / peak if flops else None,
         "compile_count": counter.count, "compile_count_after_warmup": compiles_after_warmup,
         "num_buckets": config.dataset.num_buckets, "loadavg_end": os.getloadavg(),
         "wall_s": time.perf_counter() - t_start,
         "machine": {**machine(), "cpu_model": _cpu_model(), "cores": ncpu}})
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a") as f:  # every run's lines, told apart by "run"
            f.writelines(json.dumps(rec, sort_keys=True) + "\n" for rec in records)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker_main()
    else:
        main()
