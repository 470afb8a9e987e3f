"""The config layer: one ``<model>.py`` per model (``PRESETS`` and ``get_config(arg)``), the shared
defaults (`configs.base`), the MulT-family affect presets (`configs.affect`) and every dataset
preset in one table (`configs.datasets`).

An importable package, so a config file outside this folder (a test's toy dataset) can build on
``configs.base`` and ``configs.datasets``; ml_collections' ``--config=<file>:<preset>`` executes
the file, which may also register a reader (`mmfuse_jax.data.formats.register_format`).
"""
