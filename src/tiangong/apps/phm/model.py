"""The remaining-useful-life model: gradient-boosted trees on windowed sensor features.

Theory of operation: every cycle of every training engine is one example; its target is the
cycles left before failure, capped at ``rul_cap`` (125), since early in life the sensors cannot
tell 200 cycles from 150 and the cap keeps the model from chasing that. LightGBM fits
``ensemble`` boosters with different seeds on the features of :mod:`.features`; the model's
estimate is their mean, clipped to ``[0, rul_cap]``.

Validation never mixes an engine's cycles between training and scoring: cross-validation
splits the *engines* into folds. Each held-out engine is scored at a few random truncation
points (as the C-MAPSS test set ends engines some time before failure) and at its last cycle.
The figures are the RMSE and the PHM08 score (late estimates cost more than early ones).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray

from tiangong.apps.phm.cmapss import CmapssRecording
from tiangong.apps.phm.errors import FeatureError, TrainingError
from tiangong.apps.phm.features import FeatureSpec, engine_features, fleet_features

__all__ = [
    "CrossValidation",
    "RulModel",
    "RulScores",
    "TrainingOptions",
    "TrainingProgress",
    "TrainingResult",
    "cross_validate",
    "evaluate_test_set",
    "phm08_score",
    "rmse",
    "train_rul_model",
]

TrainingProgress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` while training; ``done`` counts boosting rounds."""


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """How a model is trained and cross-validated; stored with each model version.

    Attributes:
        seed: seeds the fold split, the truncation points and every booster.
        rul_cap: cycles left above which an engine counts as healthy (the target is capped).
        rounds: boosting rounds per booster.
        learning_rate: LightGBM's shrinkage.
        num_leaves: leaves per tree.
        min_data_in_leaf: examples per leaf at least (against fitting sensor noise).
        ensemble: boosters averaged, each with its own seed.
        threads: LightGBM threads. One by default: the data set is small, and on a busy
            2-core machine OpenMP threads that spin-wait for each other made training 4 times
            slower (49 s instead of 11 s for one booster).
        folds: cross-validation folds (split by engine); 0 skips cross-validation.
        truncations: random truncation points scored per held-out engine.
        min_cycles: a truncated engine keeps at least this many cycles (the FD001 test set's
            shortest engine has 31).
    """

    seed: int = 1
    rul_cap: int = 125
    rounds: int = 600
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_data_in_leaf: int = 200
    ensemble: int = 1
    threads: int = 1
    folds: int = 5
    truncations: int = 5
    min_cycles: int = 31

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dictionary."""
        return asdict(self)

    def booster_params(self, seed: int) -> dict[str, Any]:
        """LightGBM parameters of one booster; ``deterministic`` makes runs repeatable."""
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbose": -1,
        }


@dataclass(frozen=True, slots=True)
class RulScores:
    """Accuracy of estimates against the true cycles left (both capped at ``rul_cap``).

    Attributes:
        rmse: root mean square error, in cycles.
        score: the PHM08 score (sum over estimates; lower is better).
        engines: engines scored.
        points: estimates scored (engines times points per engine).
    """

    rmse: float
    score: float
    engines: int
    points: int

    def to_json(self) -> dict[str, float | int]:
        """The scores as a JSON-ready dictionary (rounded for reading)."""
        return {
            "rmse": round(self.rmse, 3),
            "score": round(self.score, 1),
            "engines": self.engines,
            "points": self.points,
        }


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Cross-validation figures, split by engine.

    Attributes:
        truncated: held-out engines at random truncation points; ``score`` is per 100 points,
            comparable with a 100-engine test set.
        last_cycle: held-out engines at their last cycle (true RUL 0).
        wearing: the truncation points whose true RUL is below the cap, where the estimate is
            hard (a healthy engine at the cap is easy); ``score`` per 100 points.
        folds: number of folds.
    """

    truncated: RulScores
    last_cycle: RulScores
    wearing: RulScores
    folds: int

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON-ready dictionary."""
        return {
            "folds": self.folds,
            "truncated": self.truncated.to_json(),
            "last_cycle": self.last_cycle.to_json(),
            "wearing": self.wearing.to_json(),
        }


def rmse(estimate: NDArray[np.float64], truth: NDArray[np.float64]) -> float:
    """Root mean square error."""
    return float(np.sqrt(np.mean((estimate - truth) ** 2)))


def phm08_score(estimate: NDArray[np.float64], truth: NDArray[np.float64]) -> float:
    """The PHM08 challenge score: ``exp(-d/13) - 1`` early, ``exp(d/10) - 1`` late, summed."""
    d = estimate - truth
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


class RulModel:
    """A trained remaining-useful-life model: a feature spec and the boosters that read it."""

    def __init__(self, spec: FeatureSpec, boosters: list[lgb.Booster], *, rul_cap: int) -> None:
        if not boosters:
            raise FeatureError("a model needs at least one booster")
        expected = len(spec.names)
        for booster in boosters:
            if booster.num_feature() != expected:
                raise FeatureError(
                    f"a booster reads {booster.num_feature()} features, the spec makes {expected}"
                )
        self.spec = spec
        self.boosters = boosters
        self.rul_cap = rul_cap

    def estimate_features(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """Cycles left for each row of features, clipped to ``[0, rul_cap]``."""
        total = np.zeros(features.shape[0], dtype=np.float64)
        for booster in self.boosters:
            total += np.asarray(booster.predict(features), dtype=np.float64)
        return np.clip(total / len(self.boosters), 0.0, float(self.rul_cap))

    def estimate_engine(self, cycles: NDArray[np.int64], sensors: NDArray[np.float64]) -> float:
        """Cycles left after the last of one engine's cycles."""
        features = engine_features(self.spec, cycles, sensors)
        return float(self.estimate_features(features[-1:])[0])

    def estimate_last_cycles(self, recording: CmapssRecording) -> NDArray[np.float64]:
        """Cycles left after each engine's last cycle, in the recording's engine order."""
        rows = [
            engine_features(self.spec, recording.cycles[s], recording.sensors[s])[-1]
            for _engine, s in recording.engine_slices()
        ]
        return self.estimate_features(np.vstack(rows))

    def to_texts(self) -> list[str]:
        """Each booster in LightGBM's own text format (no pickle)."""
        return [booster.model_to_string() for booster in self.boosters]

    @classmethod
    def from_texts(cls, spec: FeatureSpec, texts: list[str], *, rul_cap: int) -> RulModel:
        """A model from :meth:`to_texts`'s output.

        Raises:
            FeatureError: a text is not a LightGBM model, or does not read the spec's features.
        """
        try:
            boosters = [lgb.Booster(model_str=text) for text in texts]
        except lgb.basic.LightGBMError as exc:
            raise FeatureError(f"not a LightGBM model: {exc}") from exc
        return cls(spec, boosters, rul_cap=rul_cap)


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What :func:`train_rul_model` made.

    Attributes:
        model: the model trained on all given engines.
        cross_validation: its cross-validation figures, or None if skipped (``folds=0``).
        seconds: wall-clock time of training and cross-validation together.
        engines: engines trained on.
    """

    model: RulModel
    cross_validation: CrossValidation | None
    seconds: float
    engines: int


def train_rul_model(
    recording: CmapssRecording,
    options: TrainingOptions | None = None,
    *,
    spec: FeatureSpec | None = None,
    progress: TrainingProgress | None = None,
) -> TrainingResult:
    """Cross-validate by engine, then train on all engines of a run-to-failure recording.

    Raises:
        TrainingError: fewer engines than folds (or than 2), or an engine too short.
    """
    options = options or TrainingOptions()
    spec = spec or FeatureSpec()
    started = time.perf_counter()
    engines = recording.engines
    if len(engines) < max(2, options.folds):
        raise TrainingError(
            f"{len(engines)} engines are too few to train and cross-validate "
            f"({options.folds} folds)"
        )
    cv = cross_validate(recording, options, spec=spec, progress=progress) if options.folds else None
    model = _fit(recording, options, spec, "training", progress)
    return TrainingResult(
        model=model,
        cross_validation=cv,
        seconds=time.perf_counter() - started,
        engines=len(engines),
    )


def cross_validate(
    recording: CmapssRecording,
    options: TrainingOptions,
    *,
    spec: FeatureSpec | None = None,
    progress: TrainingProgress | None = None,
) -> CrossValidation:
    """Cross-validation split by engine (see the module's strategy)."""
    spec = spec or FeatureSpec()
    rng = np.random.default_rng(options.seed)
    engines = recording.engines.copy()
    rng.shuffle(engines)
    truncated_est: list[float] = []
    truncated_true: list[float] = []
    last_est: list[float] = []
    last_true: list[float] = []
    for fold, held_out in enumerate(np.array_split(engines, options.folds)):
        training = recording.select(np.setdiff1d(engines, held_out))
        model = _fit(training, options, spec, f"fold {fold + 1}/{options.folds}", progress)
        validation = recording.select(held_out)
        estimates = model.estimate_features(fleet_features(model.spec, validation))
        truth = np.minimum(validation.remaining_cycles(), options.rul_cap).astype(np.float64)
        for _engine, rows in validation.engine_slices():
            length = rows.stop - rows.start
            # Features are causal, so an estimate at row t is the estimate for the engine
            # truncated after t: no need to recompute per truncation point.
            first = min(options.min_cycles, length) - 1
            picks = rows.start + rng.integers(first, length, size=options.truncations)
            truncated_est.extend(estimates[picks])
            truncated_true.extend(truth[picks])
            last_est.append(float(estimates[rows.stop - 1]))
            last_true.append(float(truth[rows.stop - 1]))
    te, tt = np.asarray(truncated_est), np.asarray(truncated_true)
    le, lt = np.asarray(last_est), np.asarray(last_true)
    worn = tt < options.rul_cap
    return CrossValidation(
        truncated=RulScores(
            rmse=rmse(te, tt),
            score=phm08_score(te, tt) * 100.0 / len(te),
            engines=len(engines),
            points=len(te),
        ),
        last_cycle=RulScores(
            rmse=rmse(le, lt), score=phm08_score(le, lt), engines=len(le), points=len(le)
        ),
        wearing=RulScores(
            rmse=rmse(te[worn], tt[worn]),
            score=phm08_score(te[worn], tt[worn]) * 100.0 / max(1, int(worn.sum())),
            engines=len(engines),
            points=int(worn.sum()),
        ),
        folds=options.folds,
    )


def evaluate_test_set(
    model: RulModel, test: CmapssRecording, true_rul: NDArray[np.int64]
) -> RulScores:
    """Score a model on a C-MAPSS test set at each engine's last cycle.

    The true cycles left are capped at the model's ``rul_cap``, as in training (the usual
    protocol for FD001 figures).

    Raises:
        TrainingError: the number of true values differs from the number of test engines.
    """
    engines = len(test.engines)
    if len(true_rul) != engines:
        raise TrainingError(f"{len(true_rul)} true RUL values for {engines} test engines")
    estimates = model.estimate_last_cycles(test)
    truth = np.minimum(true_rul, model.rul_cap).astype(np.float64)
    return RulScores(
        rmse=rmse(estimates, truth),
        score=phm08_score(estimates, truth),
        engines=engines,
        points=engines,
    )


def _fit(
    recording: CmapssRecording,
    options: TrainingOptions,
    spec: FeatureSpec,
    stage: str,
    progress: TrainingProgress | None,
) -> RulModel:
    fitted = spec.fit(recording)
    features = fleet_features(fitted, recording)
    target = np.minimum(recording.remaining_cycles(), options.rul_cap).astype(np.float64)
    boosters: list[lgb.Booster] = []
    total = options.rounds * options.ensemble
    for member in range(options.ensemble):
        callbacks: list[Callable[[Any], None]] = []
        if progress is not None:
            offset = member * options.rounds

            def report(env: Any, offset: int = offset) -> None:
                progress(stage, offset + env.iteration + 1, total)

            callbacks.append(report)
        dataset = lgb.Dataset(features, target, feature_name=fitted.names, free_raw_data=True)
        boosters.append(
            lgb.train(
                options.booster_params(options.seed * 1000 + member),
                dataset,
                num_boost_round=options.rounds,
                callbacks=callbacks,
            )
        )
    return RulModel(fitted, boosters, rul_cap=options.rul_cap)
