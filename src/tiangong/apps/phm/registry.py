"""The model registry: versioned remaining-useful-life models in a directory.

Layout: one directory per version under the registry's root (default
``<data_dir>/models/phm/``)::

    <root>/<version>/metadata.json     what the model is (see ModelVersion)
    <root>/<version>/booster-0.txt     LightGBM's own text format, one file per booster

No pickle is ever written or read: a booster file is LightGBM's text model and the metadata is
JSON, so loading a model file runs no code from it. Each booster's SHA-256 is recorded in the
metadata and the version id ends with a digest of all boosters; a model whose files do not match
is refused (:class:`ModelIntegrityError`), as is any file in a version directory that is not one
of those listed. A digest stored beside the file detects corruption and careless edits, not an
attacker who can rewrite both; the format is what keeps a hostile file from running code.

The package ships one default model (``tiangong/apps/phm/data/models/``), so estimates work on
a fresh machine without training; it is listed with the registry's own versions and is used when
no version is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from importlib import resources
from pathlib import Path
from typing import Any

from tiangong.apps.phm.errors import (
    FeatureError,
    ModelIntegrityError,
    ModelRegistryError,
    UnknownModelVersion,
)
from tiangong.apps.phm.features import FeatureSpec
from tiangong.apps.phm.model import RulModel, TrainingOptions, TrainingResult

__all__ = [
    "MODEL_FORMAT",
    "ModelRegistry",
    "ModelVersion",
    "bundled_models_dir",
    "default_registry_root",
    "library_versions",
]

MODEL_FORMAT = "tiangong.phm.rul/1"
"""The layout version of a model directory; a directory of another format is refused."""

_VERSION_ID = re.compile(r"^rul-\d{8}T\d{6}Z-[0-9a-f]{12}$")
_BOOSTER_FILE = re.compile(r"^booster-\d{1,3}\.txt$")
_METADATA = "metadata.json"


def default_registry_root(data_dir: Path) -> Path:
    """The registry directory inside a Tiangong data directory."""
    return data_dir / "models" / "phm"


def bundled_models_dir() -> Path:
    """Where the package's shipped models are."""
    return Path(str(resources.files("tiangong.apps.phm") / "data" / "models"))


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model's metadata.

    Attributes:
        version: the version id, ``rul-<UTC time>-<12 hex of the boosters' digest>``.
        created_at: when it was trained (UTC, ISO 8601).
        training_data: the training file's name and SHA-256, its engines and rows.
        feature_spec: the features the model reads, with the fleet statistics.
        options: the training options (seed, cap, boosting parameters, folds).
        cross_validation: the cross-validation figures (split by engine), or None.
        training_seconds: wall-clock time of training and cross-validation.
        libraries: versions of Python, Tiangong, LightGBM and NumPy that trained it.
        files: booster file name to its SHA-256.
        bundled: whether it is the model shipped in the package (read-only).
    """

    version: str
    created_at: str
    training_data: dict[str, Any]
    feature_spec: FeatureSpec
    options: dict[str, Any]
    cross_validation: dict[str, Any] | None
    training_seconds: float
    libraries: dict[str, str]
    files: dict[str, str]
    bundled: bool = False

    @property
    def rul_cap(self) -> int:
        """The cap of the model's target, in cycles (the health index is RUL / cap)."""
        return int(self.options.get("rul_cap", 125))

    def to_json(self) -> dict[str, Any]:
        """The metadata as stored in ``metadata.json``."""
        return {
            "format": MODEL_FORMAT,
            "version": self.version,
            "created_at": self.created_at,
            "training_data": self.training_data,
            "feature_spec": self.feature_spec.to_json(),
            "options": self.options,
            "cross_validation": self.cross_validation,
            "training_seconds": round(self.training_seconds, 2),
            "libraries": self.libraries,
            "files": self.files,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any], *, bundled: bool = False) -> ModelVersion:
        """Metadata from ``metadata.json``'s document.

        Raises:
            ModelRegistryError: another format, or a missing or malformed field.
        """
        if document.get("format") != MODEL_FORMAT:
            raise ModelRegistryError(
                f"model format {document.get('format')!r} is not {MODEL_FORMAT!r}"
            )
        try:
            return cls(
                version=str(document["version"]),
                created_at=str(document["created_at"]),
                training_data=dict(document["training_data"]),
                feature_spec=FeatureSpec.from_json(document["feature_spec"]),
                options=dict(document["options"]),
                cross_validation=document["cross_validation"],
                training_seconds=float(document["training_seconds"]),
                libraries={str(k): str(v) for k, v in document["libraries"].items()},
                files={str(k): str(v) for k, v in document["files"].items()},
                bundled=bundled,
            )
        except (KeyError, TypeError, ValueError, AttributeError, FeatureError) as exc:
            raise ModelRegistryError(f"malformed model metadata: {exc!r}") from exc


class ModelRegistry:
    """Versioned models in a directory, plus the model shipped in the package.

    Args:
        root: the registry directory (created on the first registration).
        include_bundled: whether the shipped model is listed and loadable too.
    """

    def __init__(self, root: Path, *, include_bundled: bool = True) -> None:
        self.root = root
        self.include_bundled = include_bundled

    def register(
        self,
        result: TrainingResult,
        *,
        options: TrainingOptions,
        training_file: str,
        training_digest: str,
        training_rows: int,
        now: datetime | None = None,
    ) -> ModelVersion:
        """Store a trained model as a new version and return its metadata.

        The version directory is written under a temporary name and renamed into place, so a
        reader never sees half a model.
        """
        texts = result.model.to_texts()
        digests = {f"booster-{i}.txt": _sha256(t.encode()) for i, t in enumerate(texts)}
        created = (now or datetime.now(UTC)).astimezone(UTC)
        version = f"rul-{created:%Y%m%dT%H%M%SZ}-{_version_digest(digests)[:12]}"
        cv = result.cross_validation
        entry = ModelVersion(
            version=version,
            created_at=created.isoformat(timespec="seconds"),
            training_data={
                "file": training_file,
                "sha256": training_digest,
                "engines": result.engines,
                "rows": training_rows,
            },
            feature_spec=result.model.spec,
            options=options.to_json(),
            cross_validation=cv.to_json() if cv is not None else None,
            training_seconds=result.seconds,
            libraries=library_versions(),
            files=digests,
        )
        target = self.root / version
        if target.exists():
            raise ModelRegistryError(f"version {version} is already registered")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users
            for name, text in zip(digests, texts, strict=True):
                (staging / name).write_text(text, encoding="utf-8")
            (staging / _METADATA).write_text(
                json.dumps(entry.to_json(), indent=2) + "\n", encoding="utf-8"
            )
            os.replace(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ModelRegistryError(f"cannot write {target}: {exc}") from exc
        return entry

    def versions(self) -> list[ModelVersion]:
        """All versions, oldest first: the shipped model's, then this registry's.

        A version directory whose metadata cannot be read is skipped here (loading it names the
        problem).
        """
        found: list[ModelVersion] = []
        for root, bundled in self._roots():
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if not _VERSION_ID.match(child.name):
                    continue
                try:
                    found.append(_read_metadata(child, bundled=bundled))
                except ModelRegistryError:
                    continue
        return sorted(found, key=lambda v: (not v.bundled, v.created_at, v.version))

    def default_version(self) -> str:
        """The shipped model's version if any, else the newest registered version.

        Raises:
            UnknownModelVersion: the registry is empty and no model is shipped.
        """
        versions = self.versions()
        bundled = [v for v in versions if v.bundled]
        chosen = bundled[-1] if bundled else (versions[-1] if versions else None)
        if chosen is None:
            raise UnknownModelVersion("no model is registered or shipped", version="default")
        return chosen.version

    def latest_version(self) -> str:
        """The newest version (the registry's own before the shipped one).

        Raises:
            UnknownModelVersion: the registry is empty and no model is shipped.
        """
        versions = self.versions()
        if not versions:
            raise UnknownModelVersion("no model is registered or shipped", version="latest")
        return versions[-1].version

    def load(self, version: str | None = None) -> tuple[RulModel, ModelVersion]:
        """Load a model after checking every file against its recorded digest.

        Args:
            version: a version id, ``"latest"``, or None for :meth:`default_version`.

        Raises:
            UnknownModelVersion: no such version.
            ModelIntegrityError: a file is missing, altered, unexpected, or not a LightGBM model.
            ModelRegistryError: the metadata cannot be read.
        """
        if version is None:
            version = self.default_version()
        elif version == "latest":
            version = self.latest_version()
        if not _VERSION_ID.match(version):
            raise UnknownModelVersion(f"{version!r} is not a model version id", version=version)
        for root, bundled in self._roots():
            directory = root / version
            if directory.is_dir():
                return _load_directory(directory, bundled=bundled)
        raise UnknownModelVersion(f"no model version {version}", version=version)

    def _roots(self) -> list[tuple[Path, bool]]:
        roots = [(self.root, False)]
        if self.include_bundled:
            roots.insert(0, (bundled_models_dir(), True))
        return roots


def library_versions() -> dict[str, str]:
    """The versions of the software a model is trained with."""
    import platform  # noqa: PLC0415 - only needed when registering

    out = {"python": platform.python_version()}
    for package in ("tiangong", "lightgbm", "numpy"):
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def _read_metadata(directory: Path, *, bundled: bool) -> ModelVersion:
    path = directory / _METADATA
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelRegistryError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelRegistryError(f"{path} is not a JSON object")
    entry = ModelVersion.from_json(document, bundled=bundled)
    if entry.version != directory.name:
        raise ModelIntegrityError(
            f"{path} describes version {entry.version}, not {directory.name}",
            version=directory.name,
            path=path,
        )
    return entry


def _load_directory(directory: Path, *, bundled: bool) -> tuple[RulModel, ModelVersion]:
    entry = _read_metadata(directory, bundled=bundled)
    version = entry.version
    if not entry.files or not all(_BOOSTER_FILE.match(name) for name in entry.files):
        raise ModelIntegrityError(
            "the metadata lists no booster files, or files of another kind",
            version=version,
            path=directory / _METADATA,
        )
    for child in directory.iterdir():
        if child.name != _METADATA and child.name not in entry.files:
            raise ModelIntegrityError(
                f"unexpected file {child.name} in the model directory; refusing to load it",
                version=version,
                path=child,
            )
    if not version.endswith("-" + _version_digest(entry.files)[:12]):
        raise ModelIntegrityError(
            "the recorded booster digests do not match the version id",
            version=version,
            path=directory / _METADATA,
        )
    texts: list[str] = []
    for name, expected in entry.files.items():
        path = directory / name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ModelIntegrityError(
                f"cannot read {name}: {exc}", version=version, path=path
            ) from exc
        if _sha256(raw) != expected:
            raise ModelIntegrityError(
                f"{name} does not match its recorded SHA-256; refusing to load it",
                version=version,
                path=path,
            )
        texts.append(raw.decode("utf-8"))
    try:
        model = RulModel.from_texts(entry.feature_spec, texts, rul_cap=entry.rul_cap)
    except FeatureError as exc:
        raise ModelIntegrityError(str(exc), version=version, path=directory) from exc
    return model, entry


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version_digest(files: dict[str, str]) -> str:
    """A digest of all booster digests, in file order: the tail of the version id."""
    return _sha256("\n".join(f"{name} {digest}" for name, digest in files.items()).encode())
