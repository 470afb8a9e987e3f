"""KuDA stage-2 train step: ours (JAX, `configs/kuda.py:bench`) vs the official PyTorch code, same machine.

python -m benchmarks.kuda_vs_official --official_dir=/tmp/KuDA --torch_python=/tmp/torchenv/bin/python \
    [--config=configs/kuda.py:bench --steps=10 --warmup=3 --block=2 --threads=2 --torch_malloc=tuned
     --bert_dropout=threefry|hashed --out=benchmarks/results/...]

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

``--torch_malloc=tuned|plain`` (default ``tuned``): ``tuned`` starts the torch worker with glibc's
allocator kept off mmap (``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
MALLOC_TOP_PAD_=1000000000``, so the large per-step tensors are reused from the heap rather than mapped,
page-faulted and unmapped every step), ``plain`` with glibc's defaults (those variables removed). Every
JSON record carries the choice (``"torch_malloc": "tuned"``). Our side is never affected.

Modules, by job: this one (CLI, interleaved timing, records, summary), `benchmarks.kuda_vs_official_jax`
(our step, its FLOPs, the worker's configuration), `benchmarks.kuda_vs_official_torch` (the worker run
under ``--torch_python``, and its client).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from benchmarks.kuda_vs_official_torch import TORCH_MALLOC_CHOICES, TorchWorker
from mmfuse_jax.encoders.bert import DROPOUT_IMPLS

DEFAULT_OUT = os.path.join("benchmarks", "results", "kuda_vs_official_cpu.jsonl")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official_dir", required=True, help="a checkout of github:MKMaS-GUET/KuDA (e60ef6b)")
    p.add_argument("--torch_python", required=True, help="a Python with torch, transformers, einops, scipy, tabulate")
    p.add_argument("--config", default="configs/kuda.py:bench")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side (ours: includes the compile)")
    p.add_argument("--block", type=int, default=2, help="steps per side before switching to the other side")
    p.add_argument("--threads", type=int, default=2, help="cores per side (torch.set_num_threads)")
    p.add_argument("--seed", type=int, default=0, help="the official side's init and random inputs")
    p.add_argument("--torch_malloc", default="tuned", choices=TORCH_MALLOC_CHOICES,
                   help="the torch worker's glibc malloc: tuned = kept off mmap (MALLOC_MMAP_MAX_=0 ...), "
                   "plain = glibc's defaults")
    p.add_argument("--batch_size", type=int, default=0, help="override config.batch_size (both sides)")
    p.add_argument("--compute_dtype", default="", help="override config.compute_dtype; bfloat16 = torch autocast")
    p.add_argument("--torch_device", default="cpu", choices=("cpu", "cuda"), help="where the official code runs")
    p.add_argument("--bert_dropout", default="", choices=("", *DROPOUT_IMPLS),
                   help="override config.model.bert_dropout (ours; default: the config's)")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON lines appended here ('' = stdout only)")
    return p.parse_args(argv)


def _setup_record(args, config, ready: dict, flops_xla: dict, n_params: int, peak: float, log_path: str) -> dict:
    return {"event": "setup", "config": args.config, "batch_size": config.batch_size, "threads": args.threads,
            "our_params": int(n_params), "official_params": ready["params"],
            "official_trainable_params": ready["trainable_params"], "torch": ready["torch"],
            "torch_threads": ready["threads"], "compile_s": flops_xla["compile_s"],
            "flops_per_step": flops_xla["model"],
            "matmul_flops_per_step": flops_xla["matmul"], "xla_flops_compiled_step": flops_xla["compiled"],
            "matmul_peak_flops_per_s": peak, "worker_log": log_path, "loadavg": os.getloadavg()}


def _interleaved(args, ours, worker: TorchWorker, out) -> tuple[dict, dict]:
    """Blocks of ``--block`` steps per side, alternating, the order flipping every round; (wall, CPU) times."""
    times = {"ours": [], "official": []}
    cpu = {"ours": [], "official": []}
    rounds = -(-args.steps // args.block)
    for r in range(rounds):
        n = min(args.block, args.steps - r * args.block)
        for side in (("ours", "official") if r % 2 == 0 else ("official", "ours")):
            if side == "ours":
                wall, c = ours.run(n)
            else:
                rep = worker.call(cmd="steps", n=n)
                wall, c = rep["times_s"], rep["cpu_s"]
            times[side] += wall
            cpu[side] += c
            out({"event": "block", "round": r, "side": side, "step_s": wall, "cpu_s": c, "loadavg": os.getloadavg()})
    return times, cpu


def _summary_record(args, config, times: dict, cpu: dict, flops_xla: dict, peaks: tuple[float, float],
                    official_peak: float, compiles: tuple[int, int], t_start: float) -> dict:
    """The summary line: medians/minima, ratios, MFU (against the higher of the two XLA matmul peaks)."""
    from benchmarks.common import machine

    flops, matmul_flops = flops_xla["model"], flops_xla["matmul"]
    peak_start, peak_end = peaks
    med = {k: statistics.median(v) for k, v in times.items()}
    mn = {k: min(v) for k, v in times.items()}
    peak = max(peak_start, peak_end)
    return {"event": "summary", "summary": True, "config": args.config, "batch_size": config.batch_size,
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
            "compile_count": compiles[1], "compile_count_after_warmup": compiles[0],
            "num_buckets": config.dataset.num_buckets, "loadavg_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t_start,
            "machine": {**machine(), "cpu_model": _cpu_model(), "cores": os.cpu_count()}}


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    host = runtime.tune_host()  # as our CLIs do (mmfuse_jax/runtime.py)
    args = _parse_args(argv)
    if args.torch_device != "cpu":
        # The torch worker shares the GPU with this process for the whole run: JAX's client would otherwise take
        # 75 % of the GPU's memory when it starts (below), leaving torch a quarter (20 GB of an H100).
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import jax.numpy as jnp

    from benchmarks.common import emit, git_commit
    from benchmarks.kuda_vs_official_jax import OursStepper, ours_setup, worker_config
    from benchmarks.train_step import load_config, matmul_peak_flops

    records: list[dict] = []
    run = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), "git": git_commit(), "torch_malloc": args.torch_malloc,
           "ours_malloc_tuned": host["malloc_tuned"], "ours_cpu_inline": host["cpu_inline"],
           "ours_threefry_unrolled": host["threefry_unrolled"], "ours_gc_tuned": host["gc_tuned"],
           "bert_dropout": args.bert_dropout or "config"}

    def out(rec: dict) -> None:
        rec = {"bench": "kuda_vs_official", **run, **rec}
        emit(rec)
        records.append(rec)

    ncpu = os.cpu_count()
    if args.threads != ncpu and args.torch_device == "cpu":  # XLA's CPU client uses every core; torch gets --threads
        print(f"warning: --threads={args.threads} but the machine has {ncpu} cores (XLA uses all of them)",
              file=sys.stderr)
    config = load_config(args.config)
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.compute_dtype:
        config.compute_dtype = args.compute_dtype
    if args.bert_dropout:
        config.model.bert_dropout = args.bert_dropout
    dtype = {"bfloat16": jnp.bfloat16}.get(config.compute_dtype, jnp.float32)  # the MFU's matmul
    t_start = time.perf_counter()
    exp, st, train_step, counter, batches, flops_xla, n_params = ours_setup(config, args.warmup + args.steps)
    log_path = os.path.join(tempfile.gettempdir(), "kuda_vs_official_worker.log")
    worker = TorchWorker(args.torch_python, worker_config(config, exp, args), log_path, args.torch_malloc)
    ready = worker.reply()
    peak_start = matmul_peak_flops(dtype)
    out(_setup_record(args, config, ready, flops_xla, n_params, peak_start, log_path))

    ours = OursStepper(st, train_step, batches)
    warm_ours, _ = ours.run(args.warmup)  # the first step compiles
    compiles_after_warmup = counter.count
    warm_official = worker.call(cmd="steps", n=args.warmup)["times_s"]
    out({"event": "warmup", "ours_s": warm_ours, "official_s": warm_official, "loadavg": os.getloadavg()})

    times, cpu = _interleaved(args, ours, worker, out)
    peak_end = matmul_peak_flops(dtype)
    official_peak = worker.call(cmd="matmul_peak")["matmul_peak_flops_per_s"]
    worker.close()
    out(_summary_record(args, config, times, cpu, flops_xla, (peak_start, peak_end), official_peak,
                        (compiles_after_warmup, counter.count), t_start))
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a") as f:  # every run's lines, told apart by "run"
            f.writelines(json.dumps(rec, sort_keys=True) + "\n" for rec in records)


if __name__ == "__main__":
    if "--worker" in sys.argv:  # the old way to start the torch worker; it lives in kuda_vs_official_torch.py now
        import runpy

        runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kuda_vs_official_torch.py"),
                       run_name="__main__")
    else:
        main()
