"""One file per model; importing this package registers them all."""
from mmfuse_jax.models import early_fusion, text_only  # noqa: F401
