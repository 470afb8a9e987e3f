"""`training.init_pieces`: an init's jaxpr evaluated in pieces equals the jitted function, and pieces of
one structure share one compiled program."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.training import init_pieces


class Toy(nn.Module):
    """Draws of several initializers and shapes, two identical layers, a zeros bias, a constant computed
    from literals only, and a forward pass the params do not need."""

    @nn.compact
    def __call__(self, x):
        for i in range(2):
            x = nn.Dense(6, kernel_init=nn.initializers.normal(0.02), name=f"same_{i}")(x)
        x = nn.Dense(4, kernel_init=nn.initializers.xavier_uniform(), name="xavier")(x)
        scale = self.param("scale", lambda key: jnp.sqrt(jnp.float32(2.0)) * jnp.ones((3,)))
        table = nn.Embed(7, 4, name="embed")(jnp.arange(3))
        steps = self.param("steps", lambda key: jax.random.randint(key, (2,), 0, 9))
        return x.sum() + (scale[:, None] * table).sum() + steps.sum()


def test_pieces_equal_the_jitted_init_and_share_programs():
    init_pieces.clear()
    fn = lambda key, x: Toy().init(key, x)["params"]
    args = (jax.random.PRNGKey(3), jnp.ones((2, 5)))
    want = jax.jit(fn)(*args)
    got = init_pieces.call(fn, *args)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    assert got["steps"].dtype == jnp.int32  # an exact (integer) draw, run eagerly
    programs = len(init_pieces._PIECES)
    assert programs < len(jax.tree_util.tree_leaves(want))  # e.g. the two (6,) zero biases: one program
    got_again = init_pieces.call(fn, jax.random.PRNGKey(4), jnp.ones((2, 5)))
    assert len(init_pieces._PIECES) == programs  # another seed: the same pieces, nothing new compiled
    assert not np.array_equal(np.asarray(got_again["xavier"]["kernel"]), np.asarray(got["xavier"]["kernel"]))


def test_outputs_that_are_inputs_or_literals_pass_through():
    fn = lambda key, x: {"x": x, "zero": jnp.float32(0.0), "u": jax.random.uniform(key, (3,)) * 2.0 + 1.0}
    args = (jax.random.PRNGKey(0), jnp.arange(4.0))
    got, want = init_pieces.call(fn, *args), jax.jit(fn)(*args)
    for k in want:
        assert np.array_equal(np.asarray(got[k]), np.asarray(want[k])), k
