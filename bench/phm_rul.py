"""Remaining useful life on NASA C-MAPSS FD001: training time, cross-validation and test figures.

Trains the RUL model on the full FD001 training set (100 engines) with 5-fold cross-validation
split by engine, exactly as ``tiangong phm train`` does, and prints:

- the wall-clock training time (cross-validation and the final model together, and the final
  model alone);
- the cross-validation RMSE and PHM08 score of held-out engines at random truncation points
  (5 per engine, at least 31 cycles kept, as in the test set), and at their last cycle;
- the RMSE and score of the official FD001 test set (last cycle of each of the 100 test
  engines, true RUL capped at 125), if ``test_FD001.txt`` is available (shipped beside the
  training set, or given with ``--test``). The test set is used for this figure only; nothing
  is chosen on it.

    .venv/bin/python bench/phm_rul.py
    .venv/bin/python bench/phm_rul.py --register src/tiangong/apps/phm/data/models

Raw results go to ``bench/out/phm-rul-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from tiangong.apps.phm.cmapss import bundled_cmapss_file, read_cmapss, read_rul
from tiangong.apps.phm.errors import CmapssFormatError
from tiangong.apps.phm.model import TrainingOptions, evaluate_test_set, train_rul_model
from tiangong.apps.phm.registry import ModelRegistry

console = Console()


def _shipped(name: str) -> Path | None:
    try:
        return bundled_cmapss_file(name)
    except CmapssFormatError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="training file (default: shipped)")
    parser.add_argument("--test", type=Path, default=None, help="test_FD001.txt (default: shipped)")
    parser.add_argument("--rul", type=Path, default=None, help="RUL_FD001.txt (default: shipped)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--register", type=Path, default=None, help="registry dir to add it to")
    args = parser.parse_args()

    data = args.data or bundled_cmapss_file("train_FD001.txt")
    test = args.test or _shipped("test_FD001.txt")
    rul = args.rul or _shipped("RUL_FD001.txt")
    recording = read_cmapss(data)
    options = TrainingOptions(seed=args.seed)

    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        cpu_started = time.process_time()
        result = train_rul_model(recording, options, progress=progress)
        cpu = time.process_time() - cpu_started

    started = time.perf_counter()
    train_rul_model(recording, TrainingOptions(seed=args.seed, folds=0))
    final_only = time.perf_counter() - started

    cv = result.cross_validation
    assert cv is not None
    out: dict[str, object] = {
        "data": {"file": data.name, "sha256": recording.digest, "engines": result.engines},
        "options": options.to_json(),
        "training_seconds_with_cv": round(result.seconds, 1),
        "training_cpu_seconds_with_cv": round(cpu, 1),
        "training_seconds_final_model": round(final_only, 1),
        "cross_validation": cv.to_json(),
    }
    console.print(f"training data: {data.name}, {result.engines} engines, {len(recording)} cycles")
    console.print(
        f"training time: {result.seconds:.1f} s with {cv.folds}-fold CV "
        f"({cpu:.1f} s CPU); final model alone {final_only:.1f} s"
    )
    console.print(
        f"CV, held-out engines truncated at random ({cv.truncated.points} points): "
        f"RMSE {cv.truncated.rmse:.2f}, score {cv.truncated.score:.0f} per 100 points"
    )
    console.print(
        f"CV, held-out engines at their last cycle ({cv.last_cycle.points}): "
        f"RMSE {cv.last_cycle.rmse:.2f}, score {cv.last_cycle.score:.1f}"
    )
    console.print(
        f"CV, truncation points with true RUL < {options.rul_cap} ({cv.wearing.points}): "
        f"RMSE {cv.wearing.rmse:.2f}, score {cv.wearing.score:.0f} per 100 points"
    )
    if test is not None and rul is not None and test.is_file():
        test_recording = read_cmapss(test)
        truth = read_rul(rul, engines=len(test_recording.engines))
        scores = evaluate_test_set(result.model, test_recording, truth)
        out["test"] = {"file": test.name, **scores.to_json()}
        console.print(
            f"test set {test.name} ({scores.engines} engines, last cycle): "
            f"RMSE {scores.rmse:.2f}, score {scores.score:.0f}"
        )
    else:
        console.print("test set: test_FD001.txt not found (give --test and --rul); no test figure")

    if args.register is not None:
        entry = ModelRegistry(args.register, include_bundled=False).register(
            result,
            options=options,
            training_file=data.name,
            training_digest=recording.digest,
            training_rows=len(recording),
        )
        out["registered"] = entry.version
        console.print(f"registered {entry.version} in {args.register}")

    directory = Path(__file__).parent / "out"
    directory.mkdir(exist_ok=True)
    path = directory / f"phm-rul-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"raw results: {path}")


if __name__ == "__main__":
    main()
