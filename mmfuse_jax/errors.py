"""One error type for bad data and one for bad configuration.

Messages name the place first, so a user can open the file and look:
``train.tsv: row 12 column 'label' expected one of the 20 MIntRec intents, got 'Sing'``.
"""
from __future__ import annotations

import os


class DataError(ValueError):
    """Bad or missing data: names the file, the key/row, what was expected and what was found."""

    def __init__(self, path: str | os.PathLike, key: str | None = None, expected: str | None = None,
                 got: str | None = None, *, hint: str | None = None):
        self.path, self.key, self.expected, self.got = str(path), key, expected, got
        msg = os.path.basename(self.path) if self.path else "<data>"
        if key is not None:
            msg += f": {key}"
        if expected is not None:
            msg += f" expected {expected}"
        if got is not None:
            msg += f", got {got}"
        if hint:
            msg += f" ({hint})"
        msg += f"  [file: {self.path}]"
        super().__init__(msg)


class ConfigError(ValueError):
    """A configuration value that cannot work (unknown model, preset, dataset, ...)."""
