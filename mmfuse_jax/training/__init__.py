"""Train state, the one train/eval step, sharding, checkpoints and the loop."""
