"""The cluster profile: what the compiled pipeline asks Kubernetes for (GPUs, nodes, taints).

Kubeflow Pipelines fixes node selectors, tolerations, CPU requests and a loop's parallelism at
compile time, so they come from a profile file (``pipelines/configs/cluster.yaml``, or the file
named by ``APRFLOW_CLUSTER_PROFILE`` when compiling); the GPU count per training task is the
run-time pipeline parameter ``gpus_per_trial``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from components.common.errors import AprflowError

PROFILE_ENV = "APRFLOW_CLUSTER_PROFILE"
DEFAULT_PROFILE = Path(__file__).parent / "configs" / "cluster.yaml"


class ProfileError(AprflowError):
    """A cluster profile that cannot be compiled."""


@dataclass(frozen=True)
class ClusterProfile:
    """See ``pipelines/configs/cluster.yaml`` for what each key means."""

    accelerator: str = "nvidia.com/gpu"
    gpus_per_node: int = 8
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    train_cpu: int = 8
    train_memory: str = "64Gi"
    shm_size: str = "16Gi"
    max_parallel_tasks: int = 16

    def __post_init__(self) -> None:
        for name in ("gpus_per_node", "train_cpu", "max_parallel_tasks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileError(
                    f"cluster profile: {name} must be an integer >= 1, got {value!r}"
                )
        for toleration in self.tolerations:
            unknown = set(toleration) - {"key", "operator", "value", "effect", "toleration_seconds"}
            if unknown:
                raise ProfileError(f"cluster profile: toleration keys {sorted(unknown)} unknown")


def load_profile(path: str | Path | None = None) -> ClusterProfile:
    """The profile at ``path``, else ``$APRFLOW_CLUSTER_PROFILE``, else the committed one."""
    path = Path(path or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"cannot read cluster profile {path}: {e}") from None
    valid = {f.name for f in fields(ClusterProfile)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ProfileError(
            f"cluster profile {path}: unknown key(s) {', '.join(unknown)}; valid keys are "
            f"{', '.join(sorted(valid))}"
        )
    return ClusterProfile(**values)
