"""One file per model; importing this package registers them all."""
from mmfuse_jax.models import dyken_hyena, early_fusion, text_only  # noqa: F401
from mmfuse_jax.models import hct_dmg, mult  # noqa: F401
from mmfuse_jax.models import kuda  # noqa: F401
from mmfuse_jax.models import mvcl_daf  # noqa: F401
