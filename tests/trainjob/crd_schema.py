"""Strict validation of Kubeflow Trainer objects against the Trainer CRDs in ``crds/<tag>/``.

What an API server does with a custom object under ``fieldValidation=Strict`` (kubectl's
default ``--validate=strict``): the values must match the CRD's ``openAPIV3Schema`` (types,
enums, required fields, patterns), and a field the schema does not declare is an error. CRD
schemas never set ``additionalProperties: false`` (a structural schema prunes unknown fields
instead), so plain JSON Schema validation accepts any unknown field; :func:`unknown_fields`
walks the schema along the object to find them, as the API server's pruning does
(kubernetes/kubernetes v1.33, staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/
pruning/algorithm.go, ``PruneWithOptions`` and ``prune``):
keys not in ``properties`` are unknown unless the node has ``additionalProperties`` or
``x-kubernetes-preserve-unknown-fields: true``. The root ``metadata`` is an ObjectMeta that the
API server checks itself (the CRD only says ``type: object``): its keys are checked against the
kubernetes client's ``V1ObjectMeta``. CEL rules (``x-kubernetes-validations``) are not
evaluated.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes import client as k8s

CRDS = Path(__file__).resolve().parent / "crds"
#: The Trainer releases whose CRDs are committed (folder names are the git tags).
TRAINER_VERSIONS = sorted(path.name for path in CRDS.iterdir() if path.is_dir())
API_VERSION = "trainer.kubeflow.org/v1alpha1"
_OBJECT_META = frozenset(k8s.V1ObjectMeta.attribute_map.values())


@functools.cache
def crd_schema(version: str, kind: str) -> dict[str, Any]:
    """The ``v1alpha1`` openAPIV3Schema of ``kind`` in the CRD of Trainer ``version``."""
    path = CRDS / version / f"trainer.kubeflow.org_{kind.lower()}s.yaml"
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if crd["spec"]["names"]["kind"] != kind:
        raise ValueError(f"{path} defines {crd['spec']['names']['kind']}, not {kind}")
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == API_VERSION.split("/")[1]]
    return served["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths (``.spec.trainer.foo``) of the fields in ``value`` that ``schema`` does not know."""
    if schema.get("x-kubernetes-preserve-unknown-fields") is True:
        return []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        found = []
        for key, item in value.items():
            child = properties.get(key, additional if isinstance(additional, dict) else None)
            if child is not None:
                found += unknown_fields(item, child, f"{path}.{key}")
            elif additional is not True:
                found.append(f"{path}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [
            field
            for index, item in enumerate(value)
            for field in unknown_fields(item, schema["items"], f"{path}[{index}]")
        ]
    return []


def strict_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Every reason the API server of Trainer ``version`` would reject ``obj`` (empty: valid)."""
    if obj.get("apiVersion") != API_VERSION:
        return [f".apiVersion: {obj.get('apiVersion')!r} is not {API_VERSION!r}"]
    schema = crd_schema(version, obj["kind"])
    errors = [
        f".{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    body = {key: value for key, value in obj.items() if key != "metadata"}
    errors += [f"{field}: unknown field" for field in unknown_fields(body, schema)]
    errors += [
        f".metadata.{key}: unknown field"
        for key in obj.get("metadata", {})
        if key not in _OBJECT_META
    ]
    return errors
