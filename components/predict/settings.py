"""What an ``apr-predict`` run is asked to do, checked before anything runs.

Every size a user sets is bounded here with one clear line: the budget ``k`` (at least
:data:`MIN_K`, at most the limits table's ``n_models``, and at most the population's
architectures, checked once the population is read), the number of source datasets, the
bootstrap resamples and the random draws.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from components.common.errors import AprflowError
from components.common.limits import check_count, check_limit, check_safe_name
from components.common.validation import short_repr

#: The cheap regimes whose scores predict a ranking (``components.transfer``'s cheap ones).
SCORE_REGIMES = ("knn", "linear", "logme", "leep")
#: A population source that lists every finished trial of the store.
ALL_TRIALS = "trials:all"
#: Kendall tau needs three architectures that differ; fewer trained ones measure nothing.
MIN_K = 3
#: Random rankings drawn for the random predictor's null distribution: 1,000 pin its 95 %
#: interval to about 0.01 in tau; each draw is one Kendall tau of k values.
MAX_RANDOM_DRAWS = 100_000
#: Trained models read as one population (architectures x source datasets x seeds): 500
#: architectures on 9 datasets with 3 seeds is 13,500; each is one feature extraction.
MAX_POPULATION_MODELS = 100_000
DEVICES = ("auto", "cuda", "cpu")


class PredictError(AprflowError, ValueError):
    """A prediction setting that cannot work, or a population that cannot be ranked."""


@dataclass(frozen=True)
class PredictSettings:
    """The arguments of one prediction, as the pipeline and the steps take them.

    Attributes:
        study_name: MLflow experiment and study-id prefix.
        population: a study id, a study name (its latest study in the store) or ``trials:all``.
        source_datasets: the population's datasets to use (empty: every one but the target).
        target: the new dataset (built in, or built with ``aprflow data build``).
        k: architectures to train on the target to measure the predictions.
        scores: cheap regimes whose scores predict (``knn`` gives two scores).
        seed: seed of the stratified choice, the random predictor and the bootstrap.
        target_resolution: side of the target's images (0: the population's training
            resolution).
        device: where features are extracted (``auto``, ``cuda``, ``cpu``).
        n_bootstrap: bootstrap resamples of the tau intervals (0: none).
        random_draws: random rankings of the random predictor's null distribution.
        feature_chunk_size: models per feature task (0: the transfer study's default).
    """

    study_name: str
    population: str
    target: str
    k: int
    source_datasets: tuple[str, ...] = ()
    scores: tuple[str, ...] = SCORE_REGIMES
    seed: int = 0
    target_resolution: int = 0
    device: str = "auto"
    n_bootstrap: int = 200_000  # the most resamples (analysis.stats.DEFAULT_RESAMPLES)
    random_draws: int = 1000
    feature_chunk_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_datasets", tuple(self.source_datasets))
        object.__setattr__(self, "scores", tuple(dict.fromkeys(self.scores)))
        try:
            check_safe_name("study_name", self.study_name)
            check_limit("seed", self.seed)
            check_limit("bootstrap", self.n_bootstrap, "n_bootstrap")
            if self.target_resolution:
                check_limit("resolution", self.target_resolution, "target_resolution")
            if self.source_datasets:
                check_count("datasets", self.source_datasets, "source_datasets")
        except ValueError as e:
            raise PredictError(str(e)) from None
        self._check_names()
        self._check_sizes()

    def _check_names(self) -> None:
        if not isinstance(self.population, str) or not self.population.strip():
            raise PredictError(
                "population is required: a study id or name (e.g. apr-demo) or trials:all"
            )
        if self.population != ALL_TRIALS:
            try:  # it names a folder of the store
                check_safe_name("population", self.population)
            except ValueError as e:
                raise PredictError(f"{e}, or {ALL_TRIALS}") from None
        if not isinstance(self.target, str) or not self.target.strip():
            raise PredictError("target is required: the new dataset's name (e.g. shapes)")
        if self.target in self.source_datasets:
            raise PredictError(
                f"target {self.target!r} is also a source dataset: the population must not have "
                "trained on the dataset whose ranking it predicts"
            )
        unknown = [s for s in self.scores if s not in SCORE_REGIMES]
        if unknown or not self.scores:
            raise PredictError(
                f"unknown or no score(s) {short_repr(unknown or list(self.scores))}: choose from "
                f"{', '.join(SCORE_REGIMES)}"
            )
        if self.device not in DEVICES:
            raise PredictError(f"device {self.device!r}: choose from {', '.join(DEVICES)}")

    def _check_sizes(self) -> None:
        for name, value in (("k", self.k), ("random_draws", self.random_draws)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise PredictError(f"{name} must be a whole number, got {short_repr(value)}")
        if self.k < MIN_K:
            raise PredictError(
                f"k={self.k}: train at least {MIN_K} architectures on the target (Kendall tau "
                "needs three that differ)"
            )
        try:
            check_limit("n_models", self.k, "k")
        except ValueError as e:
            raise PredictError(str(e)) from None
        if not 1 <= self.random_draws <= MAX_RANDOM_DRAWS:
            raise PredictError(
                f"random_draws must be in [1, {MAX_RANDOM_DRAWS}], got {self.random_draws}: "
                "1,000 random rankings pin the null interval to about 0.01"
            )
        if isinstance(self.feature_chunk_size, bool) or self.feature_chunk_size < 0:
            raise PredictError(
                f"feature_chunk_size must be >= 0 (0: 8 models per task), got "
                f"{short_repr(self.feature_chunk_size)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: tuples as lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PredictSettings:
        return cls(**values)


def check_k(k: int, n_architectures: int) -> None:
    """Raises :class:`PredictError` unless ``k`` architectures can be chosen from
    ``n_architectures`` that have a prediction."""
    if n_architectures < MIN_K:
        raise PredictError(
            f"the population has {n_architectures} architecture(s) with a usable model: a "
            f"ranking needs at least {MIN_K}"
        )
    if k > n_architectures:
        raise PredictError(
            f"k={k} exceeds the {n_architectures} architectures of the population: set k <= "
            f"{n_architectures} (k = {n_architectures} trains them all, so the truth is known)"
        )
