"""The trained population: which finished trials predict, and how the target is trained.

A population is read from the store: the trials of one study (by id, or by name: that name's
latest study), or every finished trial (``trials:all``), kept when they trained on one of the
source datasets and never on the target. Each kept trial is a :class:`PopulationModel`: its
architecture (the spec's hash, as ``model`` in results tables), the dataset it trained on, its
top-1 error there (the source ranking) and the seconds its training took.

The target is trained "with the study's recipe": the training setup (:class:`TrainingSetup`:
recipe, seeds, engine and its options, device, GPUs, resolution) that most of the population's
trials share, so a target trial has the id a study of the same recipe would give it and a
trained one in the store is reused.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from components.common.storage import ArtifactStore, MissingObjectError
from components.predict.settings import ALL_TRIALS, MAX_POPULATION_MODELS, PredictError
from components.train.definition import Trial


@dataclass(frozen=True)
class PopulationModel:
    """One trained model of the population.

    Attributes:
        trial_id: the trial (its checkpoint is the model).
        architecture: the spec's hash (``model`` in results tables).
        source: the dataset it trained on.
        source_error: its top-1 error on that dataset's test split, percent.
        seconds: the wall seconds its training took.
        seed: its training seed.
    """

    trial_id: str
    architecture: str
    source: str
    source_error: float
    seconds: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "architecture": self.architecture,
            "source": self.source,
            "source_error": self.source_error,
            "seconds": self.seconds,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class TrainingSetup:
    """How the population trained, and so how the target is trained.

    Attributes:
        recipe: the resolved recipe (``Recipe.to_dict()``).
        seeds: training seeds.
        engine, engine_options, device, gpus, compile_model: as in the trials.
        resolution: the training resolution.
        input: the dataset input (memory or stream) its trials used.
        specs: each architecture's spec, by architecture.
        shared_by: how many population trials share this setup (of all).
    """

    recipe: dict[str, Any]
    seeds: tuple[int, ...]
    engine: str
    engine_options: dict[str, Any]
    device: str
    gpus: int
    compile_model: bool
    resolution: int
    input: str
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    shared_by: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "seeds": list(self.seeds),
            "engine": self.engine,
            "engine_options": self.engine_options,
            "device": self.device,
            "gpus": self.gpus,
            "compile_model": self.compile_model,
            "resolution": self.resolution,
            "input": self.input,
            "specs": self.specs,
            "shared_by": self.shared_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSetup:
        return cls(**(data | {"seeds": tuple(data["seeds"])}))

    def check_gpus(self, gpus_per_trial: int) -> None:
        """Raises :class:`PredictError` unless the training tasks run this setup's GPUs per
        trial (a trial's GPU count is part of its id)."""
        if gpus_per_trial != self.gpus:
            raise PredictError(
                f"gpus_per_trial={gpus_per_trial}, but the population trained with "
                f"{self.gpus} per trial: set gpus_per_trial={self.gpus} so the target trials "
                "train as the population did"
            )

    def target_trials(self, architectures: list[str], target) -> list[Trial]:
        """Each chosen architecture trained from scratch on ``target`` (a DatasetRef) with
        this setup, every seed; architectures outermost, as a study plans them."""
        from components.train.recipes import Recipe, recipe_input

        recipe = Recipe.from_dict(self.recipe)
        # Per-image augmentations need the stream input, as a study's plan chooses it.
        chosen = recipe_input(recipe, None, target.name)
        dataset = replace(target, input=chosen) if chosen else target
        return [
            Trial(
                spec=self.specs[architecture],
                dataset=dataset,
                recipe=recipe,
                seed=seed,
                engine=self.engine,
                device=self.device,
                gpus=self.gpus,
                compile_model=self.compile_model,
                engine_options=dict(self.engine_options),
            )
            for architecture in architectures
            for seed in self.seeds
        ]


def resolve_study(store: ArtifactStore, population: str) -> str:
    """The study id ``population`` names: itself when the store holds that study, else the
    latest study (by start time) whose name it is.

    Raises:
        PredictError: when the store holds no such study (the message lists the names it has).
    """
    from components.train.plan import trial_list_key

    if store.exists(trial_list_key(population)):
        return population
    found = []
    names = set()
    for key in store.list("studies/"):
        if key.endswith("/study.json") and key.count("/") == 2:
            record = store.get_json(key)
            names.add(str(record.get("name", "")))
            if record.get("name") == population and store.exists(
                trial_list_key(record["study_id"])
            ):
                found.append((float(record.get("started_at", 0)), record["study_id"]))
    if not found:
        listed = ", ".join(sorted(n for n in names if n)[:20]) or "none"
        raise PredictError(
            f"population {population!r}: no such study id or name in store {store.uri} (study "
            f"names there: {listed}); train one first (aprflow run apr-study) or use "
            f"{ALL_TRIALS}"
        )
    return max(found)[1]


def population_trial_ids(store: ArtifactStore, population: str) -> list[str]:
    """The trial ids of a population: a study's planned trials, or every finished trial."""
    from components.train.plan import load_trial_ids
    from components.transfer.features import TRIAL_PREFIX
    from components.transfer.sources import ModelEntry, expand_trials

    if population == ALL_TRIALS:
        entries = expand_trials([ModelEntry(model=ALL_TRIALS)], store)
        return [entry.model.removeprefix(TRIAL_PREFIX) for entry in entries]
    return list(load_trial_ids(store, resolve_study(store, population)))


def load_population(
    store: ArtifactStore, population: str, source_datasets: tuple[str, ...], target: str
) -> tuple[list[PopulationModel], dict[str, Trial], dict[str, int]]:
    """The population's usable models, their trials, and what was left out and why.

    Kept: trials that ended ``ok`` on a source dataset (every dataset but ``target`` when
    ``source_datasets`` is empty). Never kept: a trial that trained on ``target``.

    Returns:
        ``(models, trials by id, left out: reason -> count)``.

    Raises:
        PredictError: for an unknown study, more than :data:`MAX_POPULATION_MODELS` trials, or
            no usable model.
    """
    from components.sample.models import model_id
    from components.train.definition import result_key
    from components.train.plan import load_trial

    ids = population_trial_ids(store, population)
    if len(ids) > MAX_POPULATION_MODELS:
        raise PredictError(
            f"population {population!r} holds {len(ids)} trials, more than "
            f"{MAX_POPULATION_MODELS}: each is one feature extraction; name a study, or "
            "filter with source_datasets"
        )
    models, trials = [], {}
    left_out: Counter[str] = Counter()
    for trial_id in ids:
        try:
            result = store.get_json(result_key(trial_id))
        except MissingObjectError:
            left_out["not trained yet"] += 1
            continue
        if result.get("status") != "ok":
            left_out[f"ended {result.get('status')}"] += 1
            continue
        trial = load_trial(store, trial_id)
        source = trial.dataset.name
        if source == target:
            left_out[f"trained on the target {target}"] += 1
            continue
        if source_datasets and source not in source_datasets:
            left_out[f"trained on {source}, not a source dataset"] += 1
            continue
        trials[trial_id] = trial
        models.append(
            PopulationModel(
                trial_id=trial_id,
                architecture=model_id(trial.spec),
                source=source,
                source_error=float(result["top1_error"]),
                seconds=float(result.get("wall_time_s") or 0.0),
                seed=trial.seed,
            )
        )
    missing = sorted(set(source_datasets) - {m.source for m in models})
    if missing:
        raise PredictError(
            f"population {population!r} has no finished trial on source dataset(s) "
            f"{', '.join(missing)} ({_left_out_text(left_out)})"
        )
    if not models:
        raise PredictError(
            f"population {population!r} has no usable model ({_left_out_text(left_out)})"
        )
    return models, trials, dict(left_out)


def _left_out_text(left_out: Counter[str]) -> str:
    return "; ".join(f"{n} {reason}" for reason, n in sorted(left_out.items())) or "no trial"


def training_setup(models: list[PopulationModel], trials: dict[str, Trial]) -> TrainingSetup:
    """The setup most population trials share (ties: the first in JSON order), with every
    architecture's spec."""

    def setup_of(trial: Trial) -> str:
        return json.dumps(
            {
                "recipe": trial.recipe.to_dict(),
                "engine": trial.engine,
                "engine_options": trial.engine_options,
                "device": trial.device,
                "gpus": trial.gpus,
                "compile_model": trial.compile_model,
                "resolution": trial.dataset.resolution,
                "input": trial.dataset.input,
            },
            sort_keys=True,
        )

    counts = Counter(setup_of(trials[m.trial_id]) for m in models)
    common, shared = min(counts.items(), key=lambda item: (-item[1], item[0]))
    seeds = sorted({m.seed for m in models if setup_of(trials[m.trial_id]) == common})
    specs = {}
    for model in models:
        specs.setdefault(model.architecture, trials[model.trial_id].spec)
    return TrainingSetup(**json.loads(common), seeds=tuple(seeds), specs=specs, shared_by=shared)
