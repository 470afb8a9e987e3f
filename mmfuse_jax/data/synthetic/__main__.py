"""``python -m mmfuse_jax.data.synthetic --out=DIR``: the MIntRec-layout benchmark (see `mintrec`)."""
from mmfuse_jax.data.synthetic.mintrec import main

main()
