"""Readers for the released dataset formats; each turns official files into example dicts.

An example is a plain dict: ``key`` (str), ``text`` (str), ``label`` (int or float),
``audio`` float32 [T_a, D_a], ``video`` float32 [T_v, D_v]. Readers do every format quirk;
nothing downstream knows which release an example came from. Each reader module exposes
``read(root, *, feat_dims, max_lens, nonfinite) -> ({split: [example]}, ReadReport)`` and
``LABELS`` (classification) ; adding a format is one module and one line here.
"""
from mmfuse_jax.data.formats import mintrec, mintrec2, mmsa, mult, mustard, urfunny

FORMATS = {"mintrec": mintrec, "mintrec2": mintrec2, "mmsa": mmsa, "mult": mult, "urfunny": urfunny,
           "mustard": mustard}
