"""One file per model; importing this package registers them all."""
from mmfuse_jax.models import dyken_hyena, early_fusion, text_only  # noqa: F401
