"""The remaining-useful-life app: reader, pipeline, registry and CLI on small slices of FD001.

Accuracy is a benchmark (bench/phm_rul.py), not a test: these train for seconds and check that
the pipeline works and refuses what it must.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tiangong.apps.phm.cli import phm_app
from tiangong.apps.phm.cmapss import bundled_cmapss_file, read_cmapss, read_rul
from tiangong.apps.phm.errors import (
    CmapssFormatError,
    FeatureError,
    ModelIntegrityError,
    ModelRegistryError,
    UnknownModelVersion,
)
from tiangong.apps.phm.model import TrainingOptions, evaluate_test_set, train_rul_model
from tiangong.apps.phm.predictor import RulPredictor
from tiangong.apps.phm.registry import ModelRegistry

QUICK = TrainingOptions(rounds=15, folds=2, truncations=2, min_data_in_leaf=20)
TRAIN_LINES = bundled_cmapss_file("train_FD001.txt").read_text().splitlines()


def _slice(path: Path, engines: int) -> Path:
    """The first ``engines`` engines of the shipped training set, as a C-MAPSS file."""
    lines = [line for line in TRAIN_LINES if int(line.split()[0]) <= engines]
    path.write_text("\n".join(lines) + "\n")
    return path


def _test_set(tmp_path: Path, engines: int = 6) -> tuple[Path, Path]:
    """A test set made like C-MAPSS's: engines cut before failure, and their true RUL file."""
    full = read_cmapss(_slice(tmp_path / "full.txt", engines))
    keep: dict[int, int] = {}
    truth: list[int] = []
    for index, (engine, rows) in enumerate(full.engine_slices()):
        last = int(full.cycles[rows][-1])
        cut = max(31, last - 10 - 15 * index)
        keep[engine] = cut
        truth.append(last - cut)
    lines = [
        line
        for line in TRAIN_LINES
        if (u := int(line.split()[0])) in keep and int(line.split()[1]) <= keep[u]
    ]
    test = tmp_path / "test.txt"
    test.write_text("\n".join(lines) + "\n")
    rul = tmp_path / "rul.txt"
    rul.write_text("".join(f"{value}\n" for value in truth))
    return test, rul


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str]:
    root = tmp_path_factory.mktemp("phm")
    recording = read_cmapss(_slice(root / "train.txt", 10))
    result = train_rul_model(recording, QUICK)
    registry = ModelRegistry(root / "models")
    entry = registry.register(
        result,
        options=QUICK,
        training_file="train.txt",
        training_digest=recording.digest,
        training_rows=len(recording),
    )
    return registry, entry.version


# --- reader -------------------------------------------------------------------------------------


def test_reader_reads_the_shipped_training_set() -> None:
    recording = read_cmapss(bundled_cmapss_file("train_FD001.txt"))
    assert len(recording) == 20631
    assert list(recording.engines) == list(range(1, 101))
    assert recording.sensors.shape == (20631, 21)
    assert recording.settings.shape == (20631, 3)
    assert recording.remaining_cycles()[recording.engine_starts()[1] - 1] == 0


def test_shipped_rul_file_has_one_value_per_test_engine() -> None:
    values = read_rul(bundled_cmapss_file("RUL_FD001.txt"), engines=100)
    assert values.shape == (100,)


@pytest.mark.parametrize(
    ("edit", "message", "line"),
    [
        (lambda rows: [*rows[:2], rows[2] + " 1.0", *rows[3:]], "27 columns, expected 26", 3),
        (lambda rows: [*rows[:1], rows[1].replace("518.67", "n/a"), *rows[2:]], "'n/a'", 2),
        (lambda rows: [rows[0], rows[2], rows[1], *rows[3:]], "do not increase", 3),
        (lambda rows: [*rows[:1], "1.5" + rows[1][1:], *rows[2:]], "positive integers", 2),
        (lambda rows: [*rows[:1], rows[1].replace("518.67", "nan"), *rows[2:]], "finite", 2),
    ],
    ids=["columns", "non-numeric", "non-monotonic", "fractional-unit", "nan"],
)
def test_reader_names_the_offending_line(tmp_path, edit, message, line) -> None:
    rows = TRAIN_LINES[:5]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(edit(rows)) + "\n")
    with pytest.raises(CmapssFormatError, match=message) as caught:
        read_cmapss(path)
    assert caught.value.line == line
    assert str(path) in str(caught.value)


def test_reader_refuses_an_engine_split_in_two(tmp_path) -> None:
    rows = [line for line in TRAIN_LINES if line.split()[0] in {"1", "2"}]
    first = [line for line in rows if line.split()[0] == "1"]
    second = [line for line in rows if line.split()[0] == "2"]
    path = tmp_path / "split.txt"
    path.write_text("\n".join(first[:10] + second + first[10:]) + "\n")
    with pytest.raises(CmapssFormatError, match="engine 1 appears again"):
        read_cmapss(path)


def test_reader_refuses_empty_and_missing_files(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CmapssFormatError, match="no cycles"):
        read_cmapss(empty)
    with pytest.raises(CmapssFormatError, match="cannot read"):
        read_cmapss(tmp_path / "absent.txt")


def test_rul_reader_checks_values_and_count(tmp_path) -> None:
    path = tmp_path / "rul.txt"
    path.write_text("12\n-3\n")
    with pytest.raises(CmapssFormatError, match="non-negative integer") as caught:
        read_rul(path)
    assert caught.value.line == 2
    path.write_text("12\n7\n")
    with pytest.raises(CmapssFormatError, match="2 values for 3 test engines"):
        read_rul(path, engines=3)


# --- pipeline -----------------------------------------------------------------------------------


def test_pipeline_end_to_end_on_a_small_slice(tmp_path, trained) -> None:
    registry, version = trained
    model, entry = registry.load(version)
    assert entry.cross_validation is not None
    assert entry.cross_validation["folds"] == 2
    assert entry.training_data["engines"] == 10
    assert {"python", "lightgbm", "numpy", "tiangong"} <= set(entry.libraries)

    test, rul = _test_set(tmp_path)
    scores = evaluate_test_set(model, read_cmapss(test), read_rul(rul))
    assert scores.engines == 6
    assert np.isfinite(scores.rmse)
    assert np.isfinite(scores.score)

    # The predictor takes a device's recent cycles as dictionaries or as an array.
    recording = read_cmapss(test)
    rows = recording.sensors[:40]
    cycles = [
        {"cycle": float(c), **{f"s{j + 1}": float(v) for j, v in enumerate(row)}}
        for c, row in zip(recording.cycles[:40], rows, strict=True)
    ]
    predictor = RulPredictor.from_registry(registry, version)
    estimate = predictor.estimate(cycles)
    assert estimate.model_version == version
    assert estimate.cycles_seen == 40
    assert 0.0 <= estimate.rul_cycles <= 125.0
    assert 0.0 <= estimate.health_index <= 1.0
    assert estimate.health_index == pytest.approx(estimate.rul_cycles / 125.0)
    same = predictor.estimate(np.column_stack((recording.cycles[:40], np.zeros((40, 3)), rows)))
    assert same == estimate
    with pytest.raises(FeatureError, match="s7"):
        predictor.estimate([{k: v for k, v in cycles[0].items() if k != "s7"}])
    with pytest.raises(FeatureError, match="increase"):
        predictor.estimate([cycles[1], cycles[0]])


def test_training_is_deterministic_for_a_seed(tmp_path) -> None:
    recording = read_cmapss(_slice(tmp_path / "train.txt", 6))
    options = TrainingOptions(rounds=10, folds=0, min_data_in_leaf=20, seed=3)
    first = train_rul_model(recording, options).model.to_texts()
    second = train_rul_model(recording, options).model.to_texts()
    assert first == second


# --- registry -----------------------------------------------------------------------------------


def _copy_version(trained: tuple[ModelRegistry, str], tmp_path: Path) -> tuple[ModelRegistry, str]:
    registry, version = trained
    root = tmp_path / "registry"
    shutil.copytree(registry.root / version, root / version)
    return ModelRegistry(root, include_bundled=False), version


def test_registry_round_trip(trained) -> None:
    registry, version = trained
    model, entry = registry.load(version)
    again, _ = registry.load("latest")
    assert again.to_texts() == model.to_texts()
    assert version in [v.version for v in registry.versions()]
    metadata = json.loads((registry.root / version / "metadata.json").read_text())
    assert metadata["version"] == version
    assert metadata["feature_spec"]["sensors"] == list(entry.feature_spec.sensors)


def test_registry_refuses_a_tampered_booster(tmp_path, trained) -> None:
    registry, version = _copy_version(trained, tmp_path)
    booster = registry.root / version / "booster-0.txt"
    booster.write_text(booster.read_text().replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(ModelIntegrityError, match="does not match its recorded SHA-256"):
        registry.load(version)


def test_registry_refuses_a_rewritten_digest(tmp_path, trained) -> None:
    registry, version = _copy_version(trained, tmp_path)
    booster = registry.root / version / "booster-0.txt"
    booster.write_text("tree\nnot really a model\n")
    metadata_path = registry.root / version / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["files"]["booster-0.txt"] = "0" * 64
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelIntegrityError, match="do not match the version id"):
        registry.load(version)


def test_registry_refuses_unknown_files_and_versions(tmp_path, trained) -> None:
    registry, version = _copy_version(trained, tmp_path)
    with pytest.raises(UnknownModelVersion):
        registry.load("rul-20000101T000000Z-000000000000")
    with pytest.raises(UnknownModelVersion, match="not a model version id"):
        registry.load("../../etc")
    (registry.root / version / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelIntegrityError, match=r"unexpected file model\.pkl"):
        registry.load(version)
    (registry.root / version / "model.pkl").unlink()
    metadata_path = registry.root / version / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["format"] = "pickle"
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ModelRegistryError, match="model format"):
        registry.load(version)


def test_the_shipped_model_loads() -> None:
    registry = ModelRegistry(Path("/nonexistent"))
    model, entry = registry.load()
    assert entry.bundled
    assert entry.cross_validation is not None
    assert len(model.spec.names) == model.boosters[0].num_feature()


# --- command line -------------------------------------------------------------------------------


def test_cli_evaluate_json_with_the_shipped_model(tmp_path) -> None:
    test, rul = _test_set(tmp_path)
    result = CliRunner().invoke(
        phm_app,
        ["evaluate", "--test", str(test), "--rul", str(rul), "--json", "--data-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert set(figures) == {"rmse", "score", "engines"}
    assert figures["engines"] == 6


def test_cli_train_models_and_evaluate_a_version(tmp_path) -> None:
    train = _slice(tmp_path / "train.txt", 8)
    out = tmp_path / "models"
    runner = CliRunner()
    trained = runner.invoke(
        phm_app,
        ["train", "--data", str(train), "--out", str(out), "--rounds", "10", "--folds", "2"],
    )
    assert trained.exit_code == 0, trained.output
    (version,) = [p.name for p in out.iterdir() if p.name.startswith("rul-")]
    assert version in trained.output

    listed = runner.invoke(phm_app, ["models", "--registry", str(out)])
    assert listed.exit_code == 0, listed.output
    assert version in listed.output
    assert "shipped" in listed.output

    test, rul = _test_set(tmp_path)
    evaluated = runner.invoke(
        phm_app,
        [
            "evaluate",
            "--test",
            str(test),
            "--rul",
            str(rul),
            "--model",
            version,
            "--registry",
            str(out),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert version in evaluated.output
    assert "RMSE" in evaluated.output


def test_cli_reports_a_malformed_test_file(tmp_path) -> None:
    test = tmp_path / "test.txt"
    test.write_text("1 1 2 3\n")
    rul = tmp_path / "rul.txt"
    rul.write_text("5\n")
    result = CliRunner().invoke(phm_app, ["evaluate", "--test", str(test), "--rul", str(rul)])
    assert result.exit_code == 1
    assert "4 columns, expected 26" in result.output
