"""Dataset readers (`formats`), the synthetic benchmarks (`synthetic`), and the prepare/load pipeline."""
from __future__ import annotations

from typing import Any

from mmfuse_jax.data import synthetic


def ensure_dataset(ds: Any) -> None:
    """Write the synthetic benchmark ``ds`` (a ``config.dataset``) names if it is not written yet;
    nothing for a real dataset. The same as `synthetic.ensure`."""
    synthetic.ensure(ds)
