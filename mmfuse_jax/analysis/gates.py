"""A modality gate across training: softmax(gate_logits) and the primary modality per saved checkpoint.

python -m mmfuse_jax.analysis.gates --workdir=runs/hct_mosi [--out=runs/hct_mosi/plots/gates.png]

For a model with a trainable per-modality gate (HCT-DMG: a top-level ``gate_logits`` parameter,
its columns named by the spec's ``output_labels['gate']``). Reads every latest checkpoint of the
run through `mmfuse_jax.training.checkpoint` (the loop saves one at the end of each epoch and
keeps ``config.keep_checkpoints`` of them: set it to the number of epochs to see the whole run;
the hct_dmg demo/tiny presets do), prints one line per checkpoint and plots the gate
probabilities with the primary modality (the argmax, as the model picks it) marked.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from mmfuse_jax import plots, runfiles
from mmfuse_jax.analysis.common import Section, output_labels
from mmfuse_jax.errors import DataError
from mmfuse_jax.training.checkpoint import checkpoint_steps, read_checkpoint

PARAM = "gate_logits"


def gate_logits(params: dict, where: str) -> np.ndarray:
    """The [M] gate logits of a params tree; a `DataError` naming ``where`` when absent."""
    logits = params.get(PARAM) if isinstance(params, dict) else None
    if logits is None:
        raise DataError(where, PARAM, "a per-modality gate parameter (a model with a modality gate)", "absent")
    return np.asarray(logits, np.float64).reshape(-1)


def gate_history(run_dir: str, modalities: Sequence[str]) -> list[dict]:
    """[{'step', 'epoch' (x.5 for a mid-epoch checkpoint), 'gate': {modality: prob}, 'primary'}] per
    latest checkpoint of ``run_dir``, by step; [] without checkpoints."""
    out = []
    for step in checkpoint_steps(run_dir, "last"):
        params, meta = read_checkpoint(run_dir, "last", step)
        logits = gate_logits(params, os.path.join(run_dir, "checkpoints", str(step)))
        if len(logits) != len(modalities):
            raise DataError(os.path.join(run_dir, "checkpoints", str(step)), PARAM,
                            f"{len(modalities)} logits, one per {tuple(modalities)}", f"{len(logits)}")
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        epoch = meta["epoch"] + 0.5 if meta.get("next_batch", 0) > 0 else meta["epoch"]  # mid-epoch: between
        out.append({"step": step, "epoch": epoch, "gate": dict(zip(modalities, map(float, prob))),
                    "primary": modalities[int(np.argmax(logits))]})
    return out


def plot_gates(history: list[dict], path: str, title: str) -> str:
    """Gate probabilities against the epoch, the primary modality's initial above each checkpoint."""
    modalities = list(history[0]["gate"])
    epochs = [h["epoch"] for h in history]
    fig = plots.figure(7, 3.5)
    ax = fig.add_subplot()
    for m in modalities:
        ax.plot(epochs, [h["gate"][m] for h in history], marker="o", label=m)
    top = max(max(h["gate"].values()) for h in history)
    for h in history:
        ax.annotate(h["primary"][0].upper(), (h["epoch"], top), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=8)
    ax.margins(y=0.25)  # room for the letters
    ax.set_xlabel("epoch")
    ax.set_ylabel("softmax(gate)")
    ax.set_title(f"{title}: modality gate (letters: primary modality)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    return plots.save(fig, path, dpi=120)


def _history(run_dir: str, config: dict) -> list[dict]:
    steps = checkpoint_steps(run_dir, "last")
    if not steps:
        return []
    params, _ = read_checkpoint(run_dir, "last", steps[-1])
    size = len(gate_logits(params, os.path.join(run_dir, "checkpoints", str(steps[-1]))))
    return gate_history(run_dir, output_labels(config, "gate", size))


def analysis(run_dir: str, config: dict, preds: dict[str, dict[str, np.ndarray]], out_dir: str) -> list[Section]:
    """The registered analysis ``gates``: drawn from the checkpoints alone (no predictions needed)."""
    del preds
    history = _history(run_dir, config)
    if not history:
        return []
    path = plot_gates(history, os.path.join(out_dir, "gates.png"), runfiles.run_title(config))
    return [Section("Modality gate across training (softmax(gate) per saved checkpoint; letters: primary modality)",
                    path)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="", help="plot path (default <workdir>/plots/gates.png)")
    args = p.parse_args(argv)
    from mmfuse_jax import cli

    def work():
        config = runfiles.read_config(args.workdir)
        history = _history(args.workdir, config)
        if not history:
            raise DataError(os.path.join(args.workdir, "checkpoints"), None, "saved checkpoints", "none: train first")
        modalities = list(history[0]["gate"])
        print(f"{'step':>6} {'epoch':>6} " + " ".join(f"{m:>7}" for m in modalities) + "  primary")
        for h in history:
            print(f"{h['step']:>6} {h['epoch']:>6} " + " ".join(f"{h['gate'][m]:>7.4f}" for m in modalities)
                  + f"  {h['primary']}")
        out = args.out or os.path.join(args.workdir, runfiles.PLOTS_DIR, "gates.png")
        print("wrote", plot_gates(history, out, runfiles.run_title(config)))

    cli.run_user_facing(work)


if __name__ == "__main__":
    main()
