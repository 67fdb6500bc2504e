"""Exceptions of the prognostics and health management app.

Tree::

    PhmError
    ├── CmapssFormatError     a C-MAPSS file that is malformed (carries the path and line)
    ├── FeatureError          cycles that features cannot be computed from (too few, wrong shape)
    ├── TrainingError         training data that cannot train a model (too few engines...)
    └── ModelRegistryError    the model registry refused a request
        ├── UnknownModelVersion   no model of that version in the registry
        └── ModelIntegrityError   a model file that does not match its recorded digest, or
                                  that is not in the expected format
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CmapssFormatError",
    "FeatureError",
    "ModelIntegrityError",
    "ModelRegistryError",
    "PhmError",
    "TrainingError",
    "UnknownModelVersion",
]


class PhmError(Exception):
    """Root of all errors of the prognostics and health management app."""


class CmapssFormatError(PhmError):
    """A C-MAPSS text file that cannot be read.

    Attributes:
        path: the file.
        line: the 1-based line number of the first problem, or None for a whole-file problem.
    """

    def __init__(self, message: str, *, path: Path | str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line


class FeatureError(PhmError):
    """Cycles from which the model's features cannot be computed."""


class TrainingError(PhmError):
    """Training data that cannot train a model."""


class ModelRegistryError(PhmError):
    """The model registry refused a request (an unreadable directory, a bad version id)."""


class UnknownModelVersion(ModelRegistryError):  # noqa: N818 - the domain's word, like KeyError
    """No model of the requested version is in the registry.

    Attributes:
        version: the version asked for.
    """

    def __init__(self, message: str, *, version: str) -> None:
        super().__init__(message)
        self.version = version


class ModelIntegrityError(ModelRegistryError):
    """A model whose files do not match their recorded digests or format; it is never loaded.

    Attributes:
        version: the model version.
        path: the offending file.
    """

    def __init__(self, message: str, *, version: str, path: Path) -> None:
        super().__init__(message)
        self.version = version
        self.path = path
