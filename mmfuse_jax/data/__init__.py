"""Dataset readers, the synthetic benchmark, and the prepare/load pipeline."""
