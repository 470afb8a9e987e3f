"""A restricted unpickler for the feature pickles of the dataset releases.

Only numpy arrays / dtypes / scalars and builtin containers and scalars may be
rebuilt. Any other global (``os.system``, ``builtins.eval``, a torch class, ...)
is refused *before* it is called, so nothing in the file executes.
Numpy 1.x pickles reference ``numpy.core.*``; numpy 2 renamed it ``numpy._core``;
both spellings are admitted and mapped to the installed numpy.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np

from mmfuse_jax.errors import DataError


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import builtins
    import codecs
    import collections

    core = np._core  # numpy >= 2
    table: dict[tuple[str, str], Any] = {}
    for prefix in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spellings
        table[(f"{prefix}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                 "str", "bytes", "bytearray", "bool", "slice", "range"):
        table[("builtins", name)] = table[("__builtin__", name)] = getattr(builtins, name)
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles store bytes this way
    return table


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(np.dtypes, name)
        hint = None
        if module.startswith("torch"):
            hint = ("the file holds torch objects; convert it once with torch to numpy arrays, "
                    "e.g. {k: v.numpy() for k, v in d.items()}, and save it again")
        raise DataError(self._path, f"global '{module}.{name}'",
                        "only numpy arrays and builtin containers in a feature pickle",
                        "a reference to code, refused without running it", hint=hint)


def load_pickle(path: str | os.PathLike) -> Any:
    """Load ``path`` with the restricted unpickler; errors are `DataError` naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(path, None, "an existing file", "nothing at that path")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(io.BufferedReader(f), path).load()
    except DataError:
        raise
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(path, None, "a readable pickle", f"{type(e).__name__}: {e}") from None
