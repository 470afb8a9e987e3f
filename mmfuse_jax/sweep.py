"""Seeds: one ordinary run per seed under ``<workdir>/seed_<k>``, each evaluated, then their aggregate.

    python train.py --config=configs/<model>.py:<preset> --workdir=W --seeds=0,1,2
    python -m mmfuse_jax.sweep --config=configs/<model>.py:<preset> --workdir=W --seeds=0,1,2   (the same)

Each seed folder is a normal run folder (``config.seed`` = k; resumable; eval.py and the report work on
it). A seed whose evaluation files match its config and best checkpoint is finished and skipped on a
rerun; an unfinished one resumes. A seed that fails is reported (seed + one-line reason) and the others
continue; ``W/aggregate.json`` and ``W/aggregate.md`` hold mean ± std (sample, ddof=1) of every metric
(`mmfuse_jax.aggregate`).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys
import traceback

from mmfuse_jax import aggregate, perturb, report, runfiles
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import identity, loop
from mmfuse_jax.training import stages as stages_lib


def parse_seeds(text: str) -> list[int]:
    """``'0,1,2'`` -> [0, 1, 2]; ``'0-4'`` -> [0..4]; a clear `ConfigError` otherwise."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-") if part[1:].find("-") >= 0 else (part, "", "")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds={text!r}: expected comma-separated integers or ranges, e.g. 0,1,2 or 0-4") \
            from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds={text!r}: expected at least one seed, each once")
    return seeds


def with_seed(config, seed: int):
    c = copy.deepcopy(config)
    c.seed = seed
    return c


def finished(config, workdir: str, splits=("dev", "test"), suffix: str = "") -> bool:
    """True when the run's final stage has ``eval_<split><suffix>.json`` for ``splits``, written for this
    config and for its current best checkpoint."""
    last = stages_lib.final(config, workdir)
    records = {s: os.path.join(last.run_dir, f"eval_{s}{suffix}.json") for s in splits}
    if not all(os.path.exists(p) for p in records.values()):
        return False
    want = identity.fingerprint(last.config)
    if any(runfiles.read_json(p).get("config_fingerprint") != want for p in records.values()):
        return False
    return not runfiles.stale_outputs(last.run_dir)


@dataclasses.dataclass
class SeedResult:
    seed: int
    workdir: str
    ok: bool
    reason: str = ""
    skipped: bool = False


def run_seed(config, workdir: str, perturbations: tuple[str, ...] = (), train: bool = True) -> bool:
    """Train (or resume; ``train=False``: only evaluate) and evaluate one run, then each evaluation
    perturbation; False if all was done already."""
    did = False
    if not finished(config, workdir):
        if train:
            loop.run(config, workdir)
        ev = loop.run_evaluation(config, workdir)
        # With perturbations the report is written once, after them (its plots are drawn once per run),
        # and also when one of them fails (the `finally`).
        report.after_evaluate(ev.run_dir, ev.config, ev.preds, train=ev.train, checkpoint_step=ev.checkpoint_step,
                              write=not perturbations)
        did = True
    try:
        for spec in perturbations:
            if not finished(config, workdir, suffix=perturb.file_suffix(spec)):
                loop.run_evaluation(config, workdir, perturb=spec)
                did = True
    finally:
        if did and perturbations:
            report.write_report(stages_lib.final(config, workdir).run_dir)
    return did


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def run_seeds(config, workdir: str, seeds: list[int], perturbations: tuple[str, ...] = (),
              verbose_errors: bool = False, train: bool = True) -> list[SeedResult]:
    """`run_seed` for every seed in ``workdir/seed_<k>``; a failing seed is recorded and the next one runs.
    Writes the aggregate (`aggregate.write`) and returns one `SeedResult` per seed."""
    for spec in perturbations:
        perturb.parse(spec)  # a bad spec fails before any training
    results = []
    for seed in seeds:
        d = aggregate.seed_dir(workdir, seed)
        print(f"\n=== seed {seed} -> {d}", flush=True)
        try:
            did = run_seed(with_seed(config, seed), d, perturbations, train=train)
            results.append(SeedResult(seed, d, True, skipped=not did))
            if not did:
                print(f"seed {seed}: finished earlier (evaluation matches its config and best checkpoint)")
        except Exception as e:  # noqa: BLE001 - one seed's failure must not stop the others
            if verbose_errors:
                traceback.print_exc()
            results.append(SeedResult(seed, d, False, one_line(e)))
            print(f"seed {seed} FAILED: {one_line(e)}", file=sys.stderr, flush=True)
    failed = {r.seed: r.reason for r in results if not r.ok}
    agg = aggregate.aggregate(workdir, failed=failed)
    agg["perturbations"] = {perturb.slug(s): aggregate.aggregate(workdir, failed=failed,
                                                                 suffix=perturb.file_suffix(s))["splits"]
                            for s in perturbations}
    paths = aggregate.write(workdir, agg, f"{config.model_name} on {config.dataset.name} ({config.preset})")
    print(open(paths[1]).read(), end="")
    print(f"aggregate: {paths[0]}, {paths[1]}")
    return results


def run_command(config, workdir: str, seeds_text: str, perturb_text: str = "", train: bool = True) -> None:
    """What ``train.py --seeds`` and ``python -m mmfuse_jax.sweep`` do: `run_seeds`, then exit 1 if a seed
    failed (after every other seed ran and the aggregate was written)."""
    from mmfuse_jax import cli

    holder: list = []

    def go():
        seeds = parse_seeds(seeds_text)
        specs = tuple(perturb.split_list(perturb_text))
        holder.extend(run_seeds(config, workdir, seeds, specs, verbose_errors=cli.debug(), train=train))

    cli.run_user_facing(go, config=config)
    bad = [r for r in holder if not r.ok]
    if bad:
        cli.fail(f"{len(bad)} of {len(holder)} seeds failed: "
                 + "; ".join(f"seed {r.seed}: {r.reason}" for r in bad), code=1)


def main(argv) -> None:
    """The flags of train.py (`mmfuse_jax.cli`) with --seeds required."""
    del argv
    from mmfuse_jax import cli

    cli.init_distributed()
    if not cli.SEEDS.value:
        cli.fail("--seeds is required, e.g. --seeds=0,1,2")
    run_command(cli.CONFIG.value, cli.WORKDIR.value, cli.SEEDS.value, cli.PERTURB.value)


if __name__ == "__main__":
    from mmfuse_jax import cli

    cli.run_app(main)
