"""The JAX side of `benchmarks.kuda_vs_official`: our stage-2 train step (`benchmarks.train_step`'s
machinery: the shared jitted step, donated state, the bench batches), its FLOP counts for MFU, and the
configuration the torch worker builds the official model from (the same sizes, freezing and optimizer).
"""
from __future__ import annotations

import os
import time


def ours_setup(config, steps_total: int):
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


def worker_config(config, exp, args) -> dict:
    """What the torch worker builds the official model, optimizer and batches from (our config's sizes)."""
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
            "freeze": bool(exp.spec.stages(config)[-1].frozen), "batch_size": config.batch_size,
            "device": getattr(args, "torch_device", "cpu"), "bf16": config.compute_dtype == "bfloat16"}


class OursStepper:
    """Runs our jitted train step over the bench batches in turn, the state carried (and donated) across calls."""

    def __init__(self, st, train_step, batches):
        self.st, self.train_step, self.batches, self.i = st, train_step, batches, 0

    def run(self, n: int) -> tuple[list[float], list[float]]:
        """(wall, process CPU) seconds of each of ``n`` steps."""
        import jax

        wall, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            self.st, metrics = self.train_step(self.st, self.batches[self.i % len(self.batches)])
            jax.block_until_ready(metrics["loss"])
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            self.i += 1
        return wall, cpu
