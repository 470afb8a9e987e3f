"""Dataset readers, the synthetic benchmarks, and the prepare/load pipeline."""


def ensure_dataset(ds) -> None:
    """Generate a synthetic benchmark named by ``ds`` (demo/tiny presets) if it is not written yet."""
    from mmfuse_jax.data import synthetic, synthetic_mintrec2, synthetic_mmsa

    for generator in (synthetic, synthetic_mintrec2, synthetic_mmsa):
        generator.ensure(ds)
