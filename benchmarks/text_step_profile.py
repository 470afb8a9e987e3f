"""Where the time of our text_only train step goes (the `text_vs_transformers` setup: a random BERT of
all-MiniLM-L6-v2's shape, batch 16, MIntRec-like lengths).

python -m benchmarks.text_step_profile [--rounds=5 --block=10 --bucket=-1 --out=...]

Times, interleaved in rounds of ``--block`` calls each on one batch of one length bucket (``--bucket``:
index into the 'auto' buckets; -1 = the bucket most batches fall in), jitted pieces of the step:
  * ``step``         the shared train step as training runs it (donated state);
  * ``fwd``          the training forward pass and loss (dropout on);
  * ``fwd_eval``     the same without dropout (train=False);
  * ``fwd_bwd``      value_and_grad of the training loss;
  * ``update``       what the step adds to fwd_bwd: global norm, clip + AdamW, the non-finite guard, on
                     fixed gradients (donated params and optimizer state): the step's own update
                     (`state.make_update`, guard 'where': AdamW's moments selected before the parameter
                     update reads them, and the clip as one multiplication, `training/adamw.py`);
  * ``update_cond``  the same with the guard 'cond' (``lax.cond(ok, update, keep)``);
  * ``update_select_after`` the guard 'select_after': optax's update, then ``jnp.where(ok, new, old)``
                     per array (the step's 'where' guard before 0665963);
  * ``update_noguard`` optax's update (its clip included) without a guard (a bound, not a step anyone
                     should run).
Each block also records user and system CPU milliseconds and minor page faults per call (getrusage).
Our CLIs' host settings apply (`mmfuse_jax.runtime.tune_host`: allocator, inline CPU execution, the
unrolled Threefry); ``MMFUSE_MALLOC=system`` measures without the first two, ``MMFUSE_THREEFRY=rolled``
without the third (the setup record says which).
JSON lines to stdout and ``--out``; the summary has each piece's median milliseconds and its share of
``step``. The parameter count per top-level subtree says what the per-parameter work touches.
"""
from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import time

from benchmarks.common import emit_and_append, machine
from benchmarks.padding import mintrec_like_lengths
from benchmarks.text_vs_transformers import Ours

DEFAULT_OUT = os.path.join("benchmarks", "results", "text_step_profile_cpu.jsonl")


def _donating_runner(fn, state: dict, grads):
    def run():
        state["params"], state["opt"], norm = fn(state["params"], state["opt"], grads)
        return norm
    return run


def _pieces(ours: Ours, batch):
    import jax
    import jax.numpy as jnp
    import optax

    from benchmarks.train_step import load_config
    from mmfuse_jax import registry
    from mmfuse_jax.training import state as state_lib

    config = load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "text_only.py"))
    loss_fn = registry.get("text_only").make_loss(config)
    tx = state_lib.make_optimizer(config.optimizer, 10 ** 6)
    model, rng = ours.model, jax.random.PRNGKey(1)

    def loss(params, train: bool):
        out = model.apply({"params": params}, batch, train=train, rngs={"dropout": rng} if train else None)
        return loss_fn(out, batch)[0]

    fwd = jax.jit(lambda p: loss(p, True))
    fwd_eval = jax.jit(lambda p: loss(p, False))
    fwd_bwd = jax.jit(jax.value_and_grad(lambda p: loss(p, True)))

    def the_step_s(guard: str):
        opt = config.optimizer.copy_and_resolve_references()
        opt.guard = guard
        step_update = state_lib.make_update(opt, 10 ** 6)

        def update(params, opt_state, grads):
            norm = optax.global_norm(grads)
            return *step_update(grads, opt_state, params, jnp.isfinite(norm)), norm
        return update

    def update_noguard(params, opt_state, grads):
        updates, new_opt = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt, optax.global_norm(grads)

    params = jax.tree_util.tree_map(jnp.copy, ours.state.params)
    _, grads = fwd_bwd(params)
    updaters = {}
    for name, fn in (("update", the_step_s("where")), ("update_cond", the_step_s("cond")),
                     ("update_select_after", the_step_s("select_after")), ("update_noguard", update_noguard)):
        state = {"params": jax.tree_util.tree_map(jnp.copy, params), "opt": tx.init(params)}  # donated each call

        updaters[name] = _donating_runner(jax.jit(fn, donate_argnums=(0, 1)), state, grads)

    def run_step():
        ours.state, m = ours.train_step(ours.state, batch)
        return m["loss"]

    return {"step": run_step, "fwd": lambda: fwd(params), "fwd_eval": lambda: fwd_eval(params),
            "fwd_bwd": lambda: fwd_bwd(params)[0], **updaters}, params


def main(argv: list[str] | None = None) -> list[dict]:
    from mmfuse_jax import runtime

    host = runtime.tune_host()  # as our CLIs do; MMFUSE_MALLOC=system leaves glibc's defaults
    import jax

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1334)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--bucket", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args(argv)
    records, run = [], time.strftime("%Y-%m-%dT%H:%M:%S")

    def out(rec):
        records.append({"bench": "text_step_profile", "run": run, **rec})
        emit_and_append(records[-1], a.out)

    lengths = mintrec_like_lengths(a.n, 48, a.seed)
    ours = Ours(lengths, a.batch_size, a.seed)
    plan = ours.plan(0)
    counts = collections.Counter(k for _, k in plan)
    bucket = counts.most_common(1)[0][0] if a.bucket < 0 else a.bucket
    batch = next(b for b, (_, k) in zip(ours.batches, plan) if k == bucket)
    pieces, params = _pieces(ours, batch)
    sizes = {k: int(sum(x.size for x in jax.tree_util.tree_leaves(v))) for k, v in params.items()}
    out({"event": "setup", "bucket": ours.buckets[bucket], "batches_in_bucket": counts[bucket],
         "batches": len(plan), "params_by_subtree": sizes, "params": sum(sizes.values()), "machine": machine(),
         "malloc_tuned": host["malloc_tuned"], "cpu_inline": host["cpu_inline"],
         "threefry_unrolled": host["threefry_unrolled"], "gc_tuned": host["gc_tuned"]})
    for fn in pieces.values():  # compile
        jax.block_until_ready(fn())
    times = {k: [] for k in pieces}
    for r in range(a.rounds):
        names = list(pieces) if r % 2 == 0 else list(reversed(pieces))
        for name in names:
            fn = pieces[name]
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(a.block):
                res = fn()
            jax.block_until_ready(res)
            ms = (time.perf_counter() - t0) / a.block * 1e3
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            times[name].append(ms)
            out({"event": "block", "round": r, "piece": name, "ms": ms, "loadavg": os.getloadavg(),
                 "user_ms": (r1.ru_utime - r0.ru_utime) / a.block * 1e3,
                 "sys_ms": (r1.ru_stime - r0.ru_stime) / a.block * 1e3,
                 "minor_faults": (r1.ru_minflt - r0.ru_minflt) / a.block})
    med = {k: statistics.median(v) for k, v in times.items()}
    out({"event": "summary", "summary": True, "median_ms": med,
         "share_of_step": {k: v / med["step"] for k, v in med.items()},
         "step_examples_per_s": a.batch_size / med["step"] * 1e3})
    return records


if __name__ == "__main__":
    main()
