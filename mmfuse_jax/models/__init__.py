"""One file per model; importing this package registers them all."""
from mmfuse_jax.models import (  # noqa: F401
    dyken_hyena,
    early_fusion,
    hct_dmg,
    kuda,
    mag_bert,
    mult,
    mvcl_daf,
    text_only,
)
