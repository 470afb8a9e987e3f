"""HCT-DMG's gate across training: softmax(gate_logits) and the primary modality per saved checkpoint.

python -m mmfuse_jax.models.hct_dmg_gates --workdir=runs/hct_mosi [--out=runs/hct_mosi/gates.png]

Reads every checkpoint in ``<workdir>/checkpoints`` (the loop saves one at the end of each epoch
and keeps ``config.keep_checkpoints`` of them: set it to the number of epochs to see the whole
run; the hct_dmg demo/tiny presets do), prints one line per checkpoint and writes a plot of the
three gate probabilities with the primary modality (the argmax, as the model picks it) marked.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np

from mmfuse_jax.models.hct_dmg import MODALITIES


def _restore_numpy(path: str) -> dict:
    import jax
    import orbax.checkpoint as ocp

    logging.getLogger("absl").setLevel(logging.ERROR)  # "Metadata file does not exist" is harmless here
    ckpt = ocp.PyTreeCheckpointer()
    meta = ckpt.metadata(path)
    tree = getattr(getattr(meta, "item_metadata", meta), "tree", getattr(meta, "item_metadata", meta))
    args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckpt.restore(path, restore_args=args)


def gate_history(workdir: str) -> list[dict]:
    """[{'step', 'epoch' (fractional for mid-epoch checkpoints), 'gate': {modality: prob}, 'primary'}] by step."""
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no checkpoints in {root}: train first (train.py --workdir={workdir})")
    out = []
    for step in sorted((d for d in os.listdir(root) if d.isdigit()), key=int):
        state = _restore_numpy(os.path.join(root, step, "state"))
        logits = state.get("params", {}).get("gate_logits")
        if logits is None:
            raise ValueError(f"{root}/{step}: no 'gate_logits' parameter (is this an hct_dmg run?)")
        with open(os.path.join(root, step, "meta", "metadata")) as f:
            meta = json.load(f)
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        epoch = meta["epoch"] + (meta["next_batch"] > 0) * 0.5  # mid-epoch saves sit between epochs
        out.append({"step": int(step), "epoch": epoch, "gate": dict(zip(MODALITIES, map(float, prob))),
                    "primary": MODALITIES[int(np.argmax(logits))]})
    return out


def plot_gates(history: list[dict], path: str) -> str:
    """Gate probabilities against the epoch, the primary modality written above each checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for m in MODALITIES:
        ax.plot(epochs, [h["gate"][m] for h in history], marker="o", label=m)
    top = max(max(h["gate"].values()) for h in history)
    for h in history:
        ax.annotate(h["primary"][0].upper(), (h["epoch"], top), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=8)
    ax.margins(y=0.25)  # room for the letters
    ax.set_xlabel("epoch")
    ax.set_ylabel("softmax(gate)")
    ax.set_title("HCT-DMG modality gate (letters: primary modality)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="", help="plot path (default <workdir>/gates.png)")
    args = p.parse_args(argv)
    history = gate_history(args.workdir)
    print(f"{'step':>6} {'epoch':>6} " + " ".join(f"{m:>7}" for m in MODALITIES) + "  primary")
    for h in history:
        print(f"{h['step']:>6} {h['epoch']:>6} " + " ".join(f"{h['gate'][m]:>7.4f}" for m in MODALITIES)
              + f"  {h['primary']}")
    print("wrote", plot_gates(history, args.out or os.path.join(args.workdir, "gates.png")))


if __name__ == "__main__":
    main()
