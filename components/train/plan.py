"""Planning a study: the cross product of architectures, datasets and seeds as trials.

The plan is written to the store (``trials/<id>/trial.json``) so that the fan-out passes only
trial ids between tasks: a Kubeflow workflow object must stay small.
"""

from __future__ import annotations

from typing import Any

from components.common.hashing import content_hash
from components.common.limits import check_safe_name
from components.common.progress import report
from components.common.storage import ArtifactStore, CorruptObjectError, MissingObjectError
from components.data.datasets import DatasetRef
from components.train.definition import PRECISIONS, Trial, check_compile
from components.train.recipes import Recipe, resolve_recipe


def engine_options(engine: str, zero_stage: int = 0, precision: str = "auto") -> dict[str, Any]:
    """A trial's engine options (``Trial.engine_options``) from the pipeline parameters and
    CLI flags ``zero_stage`` and ``precision``; the defaults are left out, so a trial that sets
    none keeps one id whichever entry point planned it.

    Raises:
        ValueError: for a ZeRO stage other than 0-2, ZeRO with an engine other than
            deepspeed, or an unknown precision.
    """

    if isinstance(zero_stage, bool) or zero_stage not in (0, 1, 2):
        raise ValueError(f"zero_stage must be 0, 1 or 2, got {zero_stage!r}")
    if zero_stage and engine != "deepspeed":
        raise ValueError(
            f"zero_stage={zero_stage} needs engine=deepspeed (ZeRO partitions the optimizer "
            "state across DeepSpeed's ranks)"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    options: dict[str, Any] = {"zero_stage": zero_stage} if zero_stage else {}
    return options | ({"precision": precision} if precision != "auto" else {})


def study_overrides(recipe_overrides: dict[str, Any] | None, epochs: int = 0) -> dict[str, Any]:
    """The study-wide recipe overrides: ``recipe_overrides``, then a non-zero ``epochs``."""
    return dict(recipe_overrides or {}) | ({"epochs": int(epochs)} if epochs else {})


def dataset_recipe(recipe: str, overrides: dict[str, Any], settings: dict[str, Any]) -> Recipe:
    """One dataset's recipe in a study: its own ``recipe`` (else the study's ``recipe``) with
    the study's ``overrides``, then its own ``recipe_overrides`` and ``epochs``
    (``settings`` = ``dataset_settings[name]``).

    Raises:
        ValueError: for an unknown recipe or field, or a value of the wrong type or range.
    """
    own = dict(settings.get("recipe_overrides") or {})
    own |= {"epochs": int(settings["epochs"])} if settings.get("epochs") else {}
    return resolve_recipe(settings.get("recipe") or recipe, overrides | own)


def trial_key(trial_id: str) -> str:
    return f"trials/{trial_id}/trial.json"


def plan_trials(
    specs: list[dict[str, Any]],
    datasets: list[DatasetRef],
    recipe: Recipe,
    seeds: list[int],
    engine: str = "torch",
    recipes: dict[str, Recipe] | None = None,
    device: str = "auto",
    gpus: int = 1,
    compile_model: bool = False,
    engine_options: dict[str, Any] | None = None,
    test_sets: dict[str, list[DatasetRef]] | None = None,
) -> list[Trial]:
    """Every (architecture x dataset x seed) trial, architectures outermost.

    Args:
        specs: architecture specs as dicts (``AnyNetSpec.to_dict()``).
        datasets: materialised datasets.
        recipe: the resolved training recipe.
        seeds: training seeds; several seeds measure seed variance.
        engine: training engine name.
        recipes: per-dataset recipes by dataset name (``dataset_settings``), else ``recipe``.
        device: ``auto``, ``cuda`` or ``cpu`` (components.train.engines.resolve_device).
        gpus: processes (GPUs) per trial; more than one needs the deepspeed engine.
        compile_model: train ``torch.compile``-d models (engine torch only).
        engine_options: options of the engine (:func:`engine_options`).
        test_sets: per dataset name, extra datasets whose test split its trials are also
            evaluated on (``dataset_settings.<name>.test_sets``).
    """
    if not specs:
        raise ValueError("a study needs at least one architecture")
    if not datasets:
        raise ValueError("a study needs at least one dataset")
    check_compile(engine, compile_model)
    return [
        Trial(
            spec=spec,
            dataset=dataset,
            recipe=(recipes or {}).get(dataset.name, recipe),
            seed=seed,
            engine=engine,
            device=device,
            gpus=gpus,
            compile_model=compile_model,
            engine_options=dict(engine_options or {}),
            test_sets=tuple((test_sets or {}).get(dataset.name, ())),
        )
        for spec in specs
        for dataset in datasets
        for seed in seeds
    ]


def study_id(name: str, trials: list[Trial]) -> str:
    """A study's id: its name plus the hash of its trials, so a re-run finds the same study.

    Raises:
        ValueError: for a name that is no safe store prefix (``../x``, ``a/b``, control
            characters), also when a cluster run skipped ``aprflow``'s preflight.
    """
    check_safe_name("study_name", name)
    return f"{name}-{content_hash(sorted(t.trial_id for t in trials), length=10)}"


def save_plan(store: ArtifactStore, study: str, trials: list[Trial]) -> list[str]:
    """Writes each trial's definition and the study's trial list; returns the trial ids."""
    ids = []
    for trial in trials:
        trial_id = trial.trial_id
        if not _plan_intact(store, trial_key(trial_id)):
            store.put_json(trial_key(trial_id), trial.to_dict())
        ids.append(trial_id)
    store.put_json(trial_list_key(study), ids)
    return ids


def _plan_intact(store: ArtifactStore, key: str) -> bool:
    """Whether ``key`` holds a readable trial definition; a truncated or corrupt one is set
    aside (``trial.json.corrupt-<time>``) so that the plan writes it again."""
    try:
        Trial.from_dict(store.get_json(key))
    except MissingObjectError:
        return False
    except (CorruptObjectError, KeyError, TypeError, ValueError) as e:
        aside = store.set_aside(key)
        report("plan", f"{key} is unreadable ({e}); set aside as {aside} and written again")
        return False
    return True


def trial_list_key(study: str) -> str:
    return f"studies/{study}/trials.json"


def load_trial_ids(store: ArtifactStore, study: str) -> list[str]:
    """The ids of a planned study's trials, in plan order."""
    return store.get_json(trial_list_key(study))


def load_trial(store: ArtifactStore, trial_id: str) -> Trial:
    """Reads a planned trial back."""
    return Trial.from_dict(store.get_json(trial_key(trial_id)))
