"""mmfuse_jax: multimodal (text + audio + video) fusion models in JAX/Flax."""
__version__ = "0.1.0"

__all__ = ["Predictor"]


def __getattr__(name: str):
    # Lazy: `import mmfuse_jax` stays cheap (no JAX); `from mmfuse_jax import Predictor` loads it.
    if name == "Predictor":
        from mmfuse_jax.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mmfuse_jax' has no attribute {name!r}")
