"""Analyses of trained runs (commands: ``python -m mmfuse_jax.analysis.<name>``)."""
