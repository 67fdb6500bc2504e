"""``tiangong phm``: train, list and evaluate remaining-useful-life models.

Register in ``tiangong.cli``::

    from tiangong.apps.phm.cli import phm_app

    app.add_typer(phm_app, name="phm")
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tiangong.apps.phm.errors import PhmError

__all__ = ["phm_app"]

console = Console()
err = Console(stderr=True)

phm_app = typer.Typer(
    help="Prognostics: remaining-useful-life models of turbofan engines (NASA C-MAPSS).",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Tiangong data directory; models are kept in its models/phm/.",
        envvar="TIANGONG_DATA_DIR",
    ),
]
Registry = Annotated[
    Path | None,
    typer.Option("--registry", help="Model registry directory (default: DATA_DIR/models/phm)."),
]


def _fail(exc: PhmError) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)  # paths stay whole
    return typer.Exit(1)


@phm_app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="C-MAPSS run-to-failure file (default: the shipped train_FD001.txt)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Registry directory to add the model to (default: DATA_DIR/models/phm)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of folds, truncations and boosters.")] = 1,
    folds: Annotated[
        int, typer.Option(help="Cross-validation folds, split by engine (0: skip).")
    ] = 5,
    rounds: Annotated[int, typer.Option(help="Boosting rounds per booster.")] = 600,
    data_dir: DataDir = Path(".tiangong"),
) -> None:
    """Train a model (cross-validated by engine) and register it as a new version."""
    from tiangong.apps.phm.cmapss import bundled_cmapss_file, read_cmapss  # noqa: PLC0415
    from tiangong.apps.phm.model import TrainingOptions, train_rul_model  # noqa: PLC0415
    from tiangong.apps.phm.registry import ModelRegistry, default_registry_root  # noqa: PLC0415

    try:
        path = data or bundled_cmapss_file("train_FD001.txt")
        recording = read_cmapss(path)
        options = TrainingOptions(seed=seed, folds=folds, rounds=rounds)
        with Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done)

            result = train_rul_model(recording, options, progress=progress)
        registry = ModelRegistry(out or default_registry_root(data_dir), include_bundled=False)
        entry = registry.register(
            result,
            options=options,
            training_file=path.name,
            training_digest=recording.digest,
            training_rows=len(recording),
        )
    except PhmError as exc:
        raise _fail(exc) from exc
    console.print(f"registered [bold]{entry.version}[/bold] in {registry.root}")
    console.print(
        f"trained on {result.engines} engines ({len(recording)} cycles) in {result.seconds:.1f} s"
    )
    cv = result.cross_validation
    if cv is not None:
        console.print(
            f"cross-validation ({cv.folds} folds by engine): truncated engines "
            f"RMSE {cv.truncated.rmse:.2f}, score {cv.truncated.score:.0f} per 100; "
            f"last cycle RMSE {cv.last_cycle.rmse:.2f}"
        )


@phm_app.command()
def models(
    registry_dir: Registry = None,
    data_dir: DataDir = Path(".tiangong"),
) -> None:
    """List model versions: the shipped model and those trained here."""
    from tiangong.apps.phm.registry import ModelRegistry, default_registry_root  # noqa: PLC0415

    registry = ModelRegistry(registry_dir or default_registry_root(data_dir))
    console.print(f"registry: {registry.root}")
    # The version id starts with its creation time (UTC), so it needs no column of its own.
    table = Table(
        "version", "trained on", "CV RMSE", "CV score", "source", box=None, pad_edge=False
    )
    table.columns[0].no_wrap = True
    for entry in registry.versions():
        cv = entry.cross_validation or {}
        truncated = cv.get("truncated", {})
        table.add_row(
            entry.version,
            str(entry.training_data.get("file", "?")),
            f"{truncated['rmse']:.2f}" if "rmse" in truncated else "-",
            f"{truncated['score']:.0f}" if "score" in truncated else "-",
            "shipped" if entry.bundled else "registry",
        )
    console.print(table)


@phm_app.command()
def evaluate(
    test: Annotated[Path, typer.Option("--test", help="C-MAPSS test file (test_FD00x.txt).")],
    rul: Annotated[
        Path, typer.Option("--rul", help="True RUL file of that test set (RUL_FD00x.txt).")
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help='Print one JSON line: {"rmse", "score", "engines"}.')
    ] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model version, or 'latest' (default: the shipped model)."),
    ] = None,
    registry_dir: Registry = None,
    data_dir: DataDir = Path(".tiangong"),
) -> None:
    """Score a model on a test set at each engine's last cycle: RMSE and PHM08 score."""
    from tiangong.apps.phm.cmapss import read_cmapss, read_rul  # noqa: PLC0415
    from tiangong.apps.phm.model import evaluate_test_set  # noqa: PLC0415
    from tiangong.apps.phm.registry import ModelRegistry, default_registry_root  # noqa: PLC0415

    try:
        recording = read_cmapss(test)
        truth = read_rul(rul, engines=len(recording.engines))
        registry = ModelRegistry(registry_dir or default_registry_root(data_dir))
        loaded, entry = registry.load(model)
        scores = evaluate_test_set(loaded, recording, truth)
    except PhmError as exc:
        raise _fail(exc) from exc
    if json_output:
        figures = {
            "rmse": round(scores.rmse, 3),
            "score": round(scores.score, 1),
            "engines": scores.engines,
        }
        typer.echo(orjson.dumps(figures).decode())
        return
    console.print(f"model {entry.version}, {scores.engines} engines at their last cycle")
    console.print(f"RMSE  {scores.rmse:.2f} cycles (true RUL capped at {loaded.rul_cap})")
    console.print(f"score {scores.score:.1f} (PHM08; lower is better)")
