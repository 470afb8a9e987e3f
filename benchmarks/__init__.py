"""Speed and memory measurements (JSON lines); never assertions on wall-clock time."""
