"""Study configs: a YAML file of pipeline parameters, overridable with ``--set key=value``.

The pipeline function's signature is the schema: every key of a config is one of its
parameters, with that parameter's type, and defaults come from the signature. So the Kubeflow
UI, ``kfp run create`` and ``aprflow run`` accept exactly the same keys.

A config file::

    # what the study is, the command that runs it and the expected result
    n_models: 8
    datasets: [mine, digits]          # built-in names or names built with `aprflow data build`
    dataset_settings:                 # per-dataset settings (keys: resolution, input, recipe,
      mine: {resolution: 32, epochs: 5}   # epochs); --set dataset_settings.mine.resolution=32

Mapping parameters (``dataset_settings``) take dotted overrides: ``--set a.b.c=value``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from pathlib import Path
from typing import Any

import yaml

from components.common.errors import AprflowError


class ConfigError(AprflowError):
    """A config key or value that the pipeline does not accept."""


def pipeline_parameters(pipeline) -> dict[str, inspect.Parameter]:
    """The parameters of a ``@dsl.pipeline`` function, by name."""
    return dict(inspect.signature(pipeline.pipeline_func).parameters)


def _coerce(key: str, value: Any, parameter: inspect.Parameter) -> Any:
    expected = parameter.annotation
    if expected in (int, float) and isinstance(value, str):
        # YAML reads `9e7` (no dot, no sign) as a string; numbers written so are still numbers.
        with contextlib.suppress(ValueError):
            value = expected(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list and isinstance(value, str):
        # `--set datasets=digits,faces` as a shorthand for a YAML list.
        return [item.strip() for item in value.split(",") if item.strip()]
    # A bool is an int to Python, but only a bool parameter takes one.
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"config key {key!r} must be a {expected.__name__}, got {value!r} "
            f"(e.g. {key}={parameter.default!r})"
        )
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings; values are YAML scalars or lists (``[a, b]``)."""
    overrides = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is not key=value (e.g. --set n_models=4)")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML") from None
    return overrides


def load_config(pipeline, path: str | Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Returns the pipeline's arguments: signature defaults < config file < overrides.

    Raises:
        ConfigError: for an unreadable file, an unknown key (the message lists valid keys) or a
            value of the wrong type.
    """
    parameters = pipeline_parameters(pipeline)
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config {path} is not a text (UTF-8 YAML) file") from None
        except yaml.YAMLError as e:
            # One line: PyYAML's message spans several with a caret under the position.
            problem = " ".join(str(e).split())
            raise ConfigError(f"config {path} is not valid YAML: {problem}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of parameter: value")
        values |= loaded or {}
    values |= overrides
    arguments = {name: copy.deepcopy(p.default) for name, p in parameters.items()}
    for key, value in values.items():
        head, _, path = key.partition(".")
        if path and head in parameters and parameters[head].annotation is dict:
            _set_nested(arguments[head], key, path.split("."), value)
            continue
        if key not in parameters:
            raise ConfigError(
                f"unknown config key {key!r}: valid keys are {', '.join(sorted(parameters))}"
            )
        arguments[key] = _coerce(key, value, parameters[key])
    _check_nested(arguments)
    return arguments


def _set_nested(mapping: dict, key: str, path: list[str], value: Any) -> None:
    """``--set a.b.c=v`` on a mapping parameter ``a``: sets ``a[b][c] = v``."""
    for part in path[:-1]:
        inner = mapping.setdefault(part, {})
        if not isinstance(inner, dict):
            raise ConfigError(f"--set {key}: {part!r} holds {inner!r}, not a mapping")
        mapping = inner
    mapping[path[-1]] = value


def _check_nested(arguments: dict[str, Any]) -> None:
    """Validates the inside of mapping parameters (their keys and value types)."""
    if "dataset_settings" in arguments:
        from components.data.datasets import DatasetError, check_settings

        try:
            check_settings(arguments["dataset_settings"])
        except DatasetError as e:
            raise ConfigError(str(e)) from None
