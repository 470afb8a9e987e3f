"""mmfuse_jax: multimodal (text + audio + video) fusion models in JAX/Flax."""
__version__ = "0.1.0"
