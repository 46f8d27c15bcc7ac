"""What a trial is, without the trainer: :class:`Trial` (everything that determines its
result, and its id), where its objects live in the store, and the settings a plan checks.

Light on purpose (no torch): the plan, the chunk runner, the analysis and the pipelines' small
tasks read trials without importing the trainer (components/train/trial.py), whose imports take
seconds per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from components.common.hashing import content_hash
from components.data.datasets import DatasetRef
from components.train.recipes import Recipe

# Bump when a change to the training code changes what a trial produces.
# 2: timm optimizer/scheduler/Mixup/losses/EMA/drop path, micro-batches, engine options.
TRAINER_VERSION = 2
DEVICES = ("auto", "cuda", "cpu")
# Engines that can train a ``torch.compile``-d model (``compile_model``).
COMPILE_ENGINES = ("torch",)
# ``precision`` engine option: auto = bf16 on a GPU, fp32 on the CPU.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_compile(engine: str, compile_model: bool) -> None:
    """Raises ValueError when ``compile_model`` is asked of an engine that cannot compile."""
    if compile_model and engine not in COMPILE_ENGINES:
        raise ValueError(
            f"compile_model needs engine {' or '.join(COMPILE_ENGINES)}: engine {engine!r} "
            "trains eager models only (set compile_model=false or engine=torch)"
        )


@dataclass(frozen=True)
class Trial:
    """Everything that determines a trial's result."""

    spec: dict[str, Any]
    dataset: DatasetRef
    recipe: Recipe
    seed: int
    engine: str = "torch"
    # "auto" (a GPU when there is one, recorded in the result), "cuda" or "cpu"; and the
    # processes (GPUs) one trial trains on. Both change the numbers (bf16 on a GPU, batch norm
    # statistics per rank), so a pinned device or several GPUs are part of the identity.
    device: str = "auto"
    gpus: int = 1
    # torch.compile: inductor fuses and reorders floating-point work, so a compiled trial's
    # losses differ from the eager one's in the last digits and drift apart over training
    # (tests/train/test_compile_model.py); a different measurement, hence part of the identity
    # (only when on: eager trials keep their ids).
    compile_model: bool = False
    # Options of the engine (create_engine): torch {"precision": auto|fp32|bf16|fp16},
    # deepspeed {"zero_stage": 0-2, "precision": ...}. They change the numbers: in the id.
    engine_options: dict[str, Any] = field(default_factory=dict)
    # Extra datasets with the same classes whose test split the final weights are also
    # evaluated on (RSB's ImageNet-val vs -V2): ``evaluations[<name>]`` in the result.
    test_sets: tuple[DatasetRef, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "test_sets", tuple(self.test_sets))
        for extra in self.test_sets:
            if extra.num_classes != self.dataset.num_classes:
                raise ValueError(
                    f"test set {extra.name!r} has {extra.num_classes} classes, the trained "
                    f"dataset {self.dataset.name!r} {self.dataset.num_classes}: a test set "
                    "must share the classes"
                )
        names = [extra.name for extra in self.test_sets]
        reserved = {"test", "val"} | {self.dataset.name}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ValueError(
                f"test sets {names} must have distinct names other than "
                f"{', '.join(sorted(reserved))}"
            )

    @property
    def trial_id(self) -> str:
        placement = {"device": self.device} if self.device != "auto" else {}
        placement |= {"gpus": self.gpus} if self.gpus != 1 else {}
        placement |= {"compile_model": True} if self.compile_model else {}
        return content_hash(
            placement
            | {
                "spec": self.spec,
                "dataset": _dataset_identity(self.dataset),
                "recipe": self.recipe.to_dict(),
                "seed": self.seed,
                "engine": self.engine,
                "engine_options": self.engine_options,
                "test_sets": [_dataset_identity(extra) for extra in self.test_sets],
                "trainer_version": TRAINER_VERSION,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "dataset": self.dataset.to_dict(),
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "engine": self.engine,
            "device": self.device,
            "gpus": self.gpus,
            "compile_model": self.compile_model,
            "engine_options": dict(self.engine_options),
            "test_sets": [extra.to_dict() for extra in self.test_sets],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(
            spec=data["spec"],
            dataset=DatasetRef(**data["dataset"]),
            recipe=Recipe.from_dict(data["recipe"]),
            seed=int(data["seed"]),
            engine=data.get("engine", "torch"),
            device=data.get("device", "auto"),
            gpus=int(data.get("gpus", 1)),
            compile_model=bool(data.get("compile_model", False)),
            engine_options=dict(data.get("engine_options") or {}),
            test_sets=tuple(DatasetRef(**extra) for extra in data.get("test_sets") or ()),
        )


def _dataset_identity(ref: DatasetRef) -> dict[str, Any]:
    return {
        "name": ref.name,
        "content_hash": ref.content_hash,
        "resolution": ref.resolution,
        "input": ref.input,
    }


#: A trial's checkpoint as a model of a transfer study or a prediction: ``trial:<id>``.
TRIAL_PREFIX = "trial:"


def result_key(trial_id: str) -> str:
    return f"trials/{trial_id}/result.json"


def checkpoint_key(trial_id: str) -> str:
    return f"trials/{trial_id}/checkpoint.pt"


def lease_prefix(trial_id: str) -> str:
    """Where the lease of the process training a trial lives (``Lease``: one at a time)."""
    return f"trials/{trial_id}"


def attempts_key(trial_id: str) -> str:
    """``trials/<id>/attempts.json``: the trial's starts and infrastructure errors (the chunk
    runner adds its child processes' entries to the same object)."""
    return f"trials/{trial_id}/attempts.json"
