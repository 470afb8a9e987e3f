"""Deprecated alias of `mmfuse_jax.data.synthetic.mmsa`, kept only while ``models/kuda_stages.py``
still calls ``synthetic_mmsa.ensure`` (delete it when that call moves to `data.ensure_dataset`)."""
from mmfuse_jax.data.synthetic import ensure  # noqa: F401
from mmfuse_jax.data.synthetic.mmsa import *
