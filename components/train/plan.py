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
from components.train.engines import check_compile
from components.train.recipes import Recipe
from components.train.trial import Trial


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
