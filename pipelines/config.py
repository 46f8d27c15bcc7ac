"""Study configs: a YAML file of pipeline parameters, overridable with ``--set key=value``.

The pipeline function's signature is the schema: every key of a config is one of its
parameters, with that parameter's type, and defaults come from the signature. So the Kubeflow
UI, ``kfp run create`` and ``aprflow run`` accept exactly the same keys.

A config file::

    # what the study is, the command that runs it and the expected result
    n_models: 8
    datasets: [mine, digits]          # built-in names or names built with `aprflow data build`
    dataset_settings:                 # per-dataset settings (keys: resolution, input, recipe,
      mine: {resolution: 32, epochs: 5}   # epochs, recipe_overrides, test_sets)
    recipe_overrides: {lr: 0.05}      # any field of the recipe (aprflow recipes NAME)

Mapping parameters (``dataset_settings``, ``recipe_overrides``) take dotted overrides:
``--set a.b.c=value``; ``--set recipe.lr=0.05`` is ``--set recipe_overrides.lr=0.05``. The
inside of a mapping is checked like the rest: an unknown recipe field lists the valid ones, a
value out of range names the range.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from components.common.cli import UsageError, did_you_mean, print_result
from components.common.errors import AprflowError
from components.common.limits import PARAMETER_LIMITS, check_count, check_limit
from components.common.validation import check_type, parse_assignments, short_repr
from components.common.yamlsafe import load_yaml_file

# ``--set recipe.lr=0.05``: the recipe's fields are the inside of ``recipe_overrides``.
ALIASES = {"recipe.": "recipe_overrides."}


class ConfigError(AprflowError):
    """A config key or value that the pipeline does not accept."""


class ConfigUsageError(ConfigError, UsageError):
    """A ``--set`` that is not ``key=value`` or names no parameter: a usage error (exit 2)."""


def pipeline_parameters(pipeline) -> dict[str, inspect.Parameter]:
    """The parameters of a ``@dsl.pipeline`` function, by name."""
    return dict(inspect.signature(pipeline.pipeline_func).parameters)


def _coerce(key: str, value: Any, parameter: inspect.Parameter) -> Any:
    """``value`` typed as parameter ``key`` is (check_type reads YAML's `9e7` text as a
    number) and within its bound of the limits table, else one ConfigError line."""
    expected = parameter.annotation
    if expected is str and isinstance(value, int) and not isinstance(value, bool):
        # `gpus_per_trial: 2` in YAML for a str parameter (the backend takes a GPU limit from a
        # string parameter only): the same count.
        value = str(value)
    if expected is list and isinstance(value, str):
        # `--set datasets=digits,faces` as a shorthand for a YAML list.
        value = [item.strip() for item in value.split(",") if item.strip()]
    label = f"config key {key!r}"
    try:
        value = check_type(label, value, expected)
        if key in PARAMETER_LIMITS and isinstance(value, list):
            check_count(PARAMETER_LIMITS[key], value, key)
        elif key in PARAMETER_LIMITS:
            check_limit(PARAMETER_LIMITS[key], value, label)
    except ValueError as e:
        raise ConfigError(f"{e} (e.g. {key}={parameter.default!r})") from None
    return value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings; values are YAML scalars or lists (``[a, b]``)."""
    try:
        return parse_assignments(pairs, "n_models=4")
    except ValueError as e:
        raise ConfigUsageError(str(e)) from None


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
            loaded = load_yaml_file(path, f"config {path}")
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
        for alias, target in ALIASES.items():
            if key.startswith(alias) and target.split(".")[0] in parameters:
                key = target + key.removeprefix(alias)
        head, _, path = key.partition(".")
        if path and head in parameters and parameters[head].annotation is dict:
            _set_nested(arguments[head], key, path.split("."), value)
            continue
        if key not in parameters:
            error = ConfigUsageError if key in overrides else ConfigError
            raise error(unknown_key_message(key, parameters))
        arguments[key] = _coerce(key, value, parameters[key])
    _check_nested(arguments)
    return arguments


def unknown_key_message(key: str, valid: Iterable[str]) -> str:
    """``unknown config key 'n_model': did you mean n_models? ...`` in at most ~300 characters
    (``aprflow run NAME --print-config`` prints every key with its type and default)."""
    valid = sorted(valid)
    hint = did_you_mean(str(key), valid) or f"valid keys are {', '.join(valid)}"
    if len(hint) > 200:
        hint = f"{hint[:150].rsplit(', ', 1)[0]}, ... (--print-config lists all {len(valid)})"
    return f"unknown config key {short_repr(key, limit=60)}: {hint}"


def _set_nested(mapping: dict, key: str, path: list[str], value: Any) -> None:
    """``--set a.b.c=v`` on a mapping parameter ``a``: sets ``a[b][c] = v``."""
    for part in path[:-1]:
        inner = mapping.setdefault(part, {})
        if not isinstance(inner, dict):
            raise ConfigError(
                f"--set {short_repr(key)}: {short_repr(part)} holds {short_repr(inner)}, not a "
                "mapping"
            )
        mapping = inner
    mapping[path[-1]] = value


def _check_nested(arguments: dict[str, Any]) -> None:
    """Validates the inside of mapping parameters (their keys, value types and ranges) and
    keeps the recipe overrides as checked (``lr: 1e-3``, text to YAML, becomes 0.001)."""
    from components.data.datasets import DatasetError, check_settings
    from components.train.recipes import check_overrides

    # Each place recipe overrides are given: where (for messages) -> the mapping holding them.
    holders = {"recipe_overrides": arguments} if "recipe_overrides" in arguments else {}
    if "dataset_settings" in arguments:
        try:
            settings = check_settings(arguments["dataset_settings"])
            for name, own in settings.items():
                if "epochs" in own:
                    check_limit("epochs", own["epochs"], f"dataset_settings.{name}.epochs")
        except (DatasetError, ValueError) as e:
            raise ConfigError(str(e)) from None
        for name, own in arguments["dataset_settings"].items():
            if "recipe_overrides" in own:
                holders[f"dataset_settings.{name}.recipe_overrides"] = own
    for where, holder in holders.items():
        try:
            values = check_overrides(holder["recipe_overrides"], where)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        # Lists stay lists: the arguments go to Kubeflow as JSON and to --dry-run as YAML.
        holder["recipe_overrides"] = {
            key: list(value) if isinstance(value, tuple) else value for key, value in values.items()
        }
        unset = [key for key, value in values.items() if value is None]
        if unset:
            # Kubeflow Pipelines (and kfp.local) take no null inside an argument.
            raise ConfigError(
                f"{where}.{unset[0]}: null cannot pass through a pipeline argument; leave the "
                "field out to keep the recipe's value"
            )


# --- the parameters on the command line ----------------------------------------------------


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and ``--print-config``: the options of ``aprflow run`` and
    ``aprflow submit`` that give a pipeline's parameters."""
    parser.add_argument("--config", help="YAML file of pipeline parameters (pipelines/configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter (listed below), e.g. --set n_models=4 "
        "--set datasets=[digits,shapes] --set recipe.lr=0.05",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print every parameter with its type, default, description and the value this "
        "run would use (after --config and --set), as a YAML config; run nothing",
    )


# "name: text" or "name, other: text" in a Google-style "Args:" section; an entry may describe
# more than one parameter ("recipe: ...; epochs: ...").
_ARG_ENTRY = re.compile(r"(?:^|; )(?P<names>\w+(?:, \w+)*): ")


def parameter_descriptions(pipeline) -> dict[str, str]:
    """Each parameter's description from the ``Args:`` section of the pipeline's docstring."""
    doc = inspect.getdoc(pipeline.pipeline_func) or ""
    _, _, args = doc.partition("Args:")
    # One entry per line: an entry starts at the section's indent, continues deeper.
    entries = re.sub(r"\n {8,}", " ", args).splitlines()
    parameters = pipeline_parameters(pipeline)
    descriptions: dict[str, str] = {}
    for entry in entries:
        parts = _ARG_ENTRY.split(entry.strip())
        # re.split with one group: [before, names, text, names, text, ...]
        for names, text in zip(parts[1::2], parts[2::2], strict=True):
            for name in names.split(", "):
                if name in parameters:
                    descriptions[name] = text.strip().rstrip(";")
    return descriptions


def _type_name(parameter: inspect.Parameter) -> str:
    annotation = parameter.annotation
    return getattr(annotation, "__name__", str(annotation))


def parameter_rows(pipeline) -> list[dict[str, Any]]:
    """Every parameter of ``pipeline`` in signature order: name, type, whether it is required
    (has no default), default and description."""
    descriptions = parameter_descriptions(pipeline)
    return [
        {
            "name": name,
            "type": _type_name(parameter),
            "required": parameter.default is inspect.Parameter.empty,
            "default": None if parameter.default is inspect.Parameter.empty else parameter.default,
            "description": descriptions.get(name, ""),
        }
        for name, parameter in pipeline_parameters(pipeline).items()
    ]


def _signature_text(row: dict[str, Any]) -> str:
    """``name (type, default VALUE)`` or ``name (type, required)``."""
    default = "required" if row["required"] else f"default {json.dumps(row['default'])}"
    return f"{row['name']} ({row['type']}, {default})"


class ParametersParser(argparse.ArgumentParser):
    """The parser of a command that runs pipelines: its epilog lists the parameters of
    ``pipelines``, made when first read (``--help``, the docs' CLI reference). Listing them
    imports each pipeline (``@dsl.pipeline`` builds its graph: about a second each), which
    parsing a command line does not need: a wrong ``--set`` is one error line at once."""

    def __init__(self, *args: Any, pipelines: Iterable[str], **kwargs: Any) -> None:
        self._pipelines = tuple(pipelines)
        self._epilog: str | None = None
        super().__init__(*args, **kwargs)

    @property
    def epilog(self) -> str:
        if self._epilog is None:
            self._epilog = "\n\n".join(parameters_help(name) for name in self._pipelines)
        return self._epilog

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        if value is not None:  # argparse sets None first
            self._epilog = value


def parameters_help(name: str) -> str:
    """The parameters of pipeline ``name`` for ``--help``: ``name (type, default VALUE)`` and
    the description, wrapped."""
    from pipelines.registry import PIPELINES

    lines = [f"parameters of {name} (--set KEY=VALUE or a --config file; --print-config):"]
    for row in parameter_rows(PIPELINES[name]):
        lines.append(f"  {_signature_text(row)}")
        lines += textwrap.wrap(
            row["description"], width=96, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines)


def _yaml_value(value: Any) -> str:
    """``value`` as one line of YAML (flow style: ``[digits, faces]``, ``{lr: 0.05}``)."""
    if isinstance(value, str) and "\n" in value:
        # A text parameter (an inline model list): PyYAML would fold it over several lines;
        # a JSON string is a YAML double-quoted scalar on one.
        return json.dumps(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").strip()  # a scalar's document ends in "..."


def config_yaml(arguments: dict[str, Any]) -> str:
    """The arguments as a YAML config, one ``key: value`` line each, in their order."""
    return "\n".join(f"{key}: {_yaml_value(value)}" for key, value in arguments.items())


def print_config(args: argparse.Namespace, pipeline, arguments: dict[str, Any]) -> None:
    """Prints ``--print-config``: every parameter with its type, default and description, and
    the value of ``arguments``: a commented YAML config, or JSON with ``--json``. A required
    parameter not given stays a comment (its value null in JSON)."""
    rows = parameter_rows(pipeline)
    lines, result = [], {}
    for row in rows:
        name, value = row["name"], arguments[row["name"]]
        unset = value is inspect.Parameter.empty
        lines.append(f"# {_signature_text(row)}")
        lines += textwrap.wrap(
            row["description"], width=96, initial_indent="#   ", subsequent_indent="#   "
        )
        lines.append(f"# {name}: (required: set it)" if unset else config_yaml({name: value}))
        result[name] = row | {"value": None if unset else value}
    print_result(args, result, text="\n".join(lines))
