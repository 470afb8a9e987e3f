"""A model's init evaluated in pieces: the numbers of one jitted init, for a fraction of its compile.

A Flax init draws every parameter from its own key (the seed folded with the parameter's path). Jitted
whole, it is one XLA program holding one threefry draw per parameter: KuDA's tiny init is ~55,000 lines
of optimised HLO and 5-7 s of compile on 2 CPU cores, as long as its train step's. `evaluate` takes the
init's jaxpr (traced once, `jax.make_jaxpr`), drops what the outputs do not need (the forward pass Flax
runs to create the variables) and cuts the rest in two:

* the exact equations (integer or key outputs from exact inputs: the seed's key, the fold-ins by path
  hash, the draws' raw bits) run eagerly, one small cached program per primitive and shape;
* the float computations, grouped into connected pieces (per parameter: bits -> uniform -> normal ->
  scale), are each jitted whole and kept by their structure, so every parameter of one shape and
  initializer shares one compiled program (KuDA's tiny init: 233 pieces, 56 programs).

A piece is compiled as a unit, as it was inside the whole init, so XLA makes the same choices in it (it
folds ``normal(key) * stddev`` into one multiply both ways): every registered model's parameters equal
the jitted init's bit for bit (tests/models/test_models.py, tests/training/test_init_pieces.py).
Measured (`benchmarks/init_compile.py`: a fresh process each, no persistent cache, trace included, medians
of 2; benchmarks/README.md): with the test suite's XLA flags KuDA tiny 6.3 -> 3.1 s, MAG-BERT 2.1 -> 1.1 s,
MVCL-DAF++ 2.0 -> 1.3 s, HCT-DMG 3.1 -> 2.4 s, but text_only 0.35 -> 0.43 s; with XLA's default flags KuDA
10.4 -> 8.0 s, MAG-BERT 3.6 -> 2.2 s, while the small inits lose up to 0.35 s (text_only 0.52 -> 0.70 s,
DyKen-Hyena 2.8 -> 3.1 s): an eager primitive compiles on its first use in a process. The pieces' programs
are shared by every later init in the process (the stages and variants of a model) and, with JAX's
persistent compilation cache (the experiments CLI, the test suite), across processes.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

_PIECES: collections.OrderedDict[str, Any] = collections.OrderedDict()  # jaxpr text -> jitted piece
_PIECES_SIZE = 1024
_LOCK = threading.Lock()


def _is_exact(var) -> bool:
    dtype = var.aval.dtype
    return (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or np.issubdtype(dtype, np.integer)
            or dtype == np.bool_)


def _live_equations(jaxpr) -> list:
    """The equations the outputs depend on (or with effects), in order."""
    live = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            kept.append(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    return kept[::-1]


def _split(jaxpr, equations: Sequence) -> tuple[list, list[list]]:
    """(exact equations, float pieces): a piece is a connected group of float equations."""
    exact_vars = set(jaxpr.invars) | set(jaxpr.constvars)
    exact, floats = [], []
    for eqn in equations:
        if all(_is_exact(v) for v in eqn.outvars) and all(
                isinstance(v, jcore.Literal) or v in exact_vars for v in eqn.invars):
            exact.append(eqn)
            exact_vars.update(eqn.outvars)
        else:
            floats.append(eqn)
    parent = list(range(len(floats)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer: dict = {}
    for i, eqn in enumerate(floats):
        for v in eqn.invars:
            if isinstance(v, jcore.Var) and v in producer:
                parent[root(i)] = root(producer[v])
        producer.update((v, i) for v in eqn.outvars)
    pieces: dict[int, list] = {}
    for i, eqn in enumerate(floats):
        pieces.setdefault(root(i), []).append(eqn)
    return exact, list(pieces.values())


def _piece_fn(closed: jcore.ClosedJaxpr):
    """The jitted piece, one per distinct jaxpr (its text: equations, shapes and literals)."""
    text = str(closed)
    with _LOCK:
        fn = _PIECES.get(text)
        if fn is not None:
            _PIECES.move_to_end(text)
            return fn
    fn = jax.jit(jcore.jaxpr_as_fun(closed))
    with _LOCK:
        _PIECES[text] = fn
        while len(_PIECES) > _PIECES_SIZE:
            _PIECES.popitem(last=False)
    return fn


def evaluate(closed: jcore.ClosedJaxpr, *args) -> list:
    """The outputs of ``closed`` (an init's jaxpr) on ``args`` (its flat inputs), computed in pieces
    (module doc). Equal to ``jax.core.jaxpr_as_fun(closed)(*args)`` jitted."""
    jaxpr = closed.jaxpr
    exact, pieces = _split(jaxpr, _live_equations(jaxpr))
    env = dict(zip(jaxpr.constvars, closed.consts))
    env.update(zip(jaxpr.invars, args))
    needed = [v for v in dict.fromkeys(v for eqn in exact for v in eqn.outvars) if not isinstance(v, jcore.DropVar)]
    eager = jcore.ClosedJaxpr(jcore.Jaxpr(jaxpr.constvars, jaxpr.invars, needed, exact), closed.consts)
    env.update(zip(needed, jcore.jaxpr_as_fun(eager)(*args)))  # op by op: not under a jit
    wanted = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    for piece in pieces:
        made = {v for eqn in piece for v in eqn.outvars}
        inputs = list(dict.fromkeys(v for eqn in piece for v in eqn.invars
                                    if isinstance(v, jcore.Var) and v not in made))
        outputs = [v for eqn in piece for v in eqn.outvars if v in wanted]
        fn = _piece_fn(jcore.ClosedJaxpr(jcore.Jaxpr((), inputs, outputs, piece), ()))
        env.update(zip(outputs, fn(*(env[v] for v in inputs))))
    return [v.val if isinstance(v, jcore.Literal) else env[v] for v in jaxpr.outvars]


def call(fn, *args) -> Any:
    """``jax.jit(fn)(*args)``, computed in pieces (an init: `evaluate`), for a function traced once."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    leaves = evaluate(closed, *jax.tree_util.tree_leaves(args))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), leaves)


def clear() -> None:
    """Forget the jitted pieces (tests that count compiles)."""
    with _LOCK:
        _PIECES.clear()
