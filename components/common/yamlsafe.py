"""The one loader of user YAML (config files, ``--set`` values, recipes, coarse maps, cluster
profiles): ``yaml.safe_load`` with the text's size, its nesting depth and aliases bounded.

``yaml.safe_load`` builds an alias (``*name``) by reference, so a few hundred bytes of nested
aliases stand for billions of values that any later walk over them (a type check, a message's
``repr``) expands; no aprflow input needs an alias, so every one is refused. PyYAML composes
nested collections recursively (``yaml/composer.py``: ``compose_node`` ->
``compose_sequence_node`` -> ``compose_node``), so deep nesting is refused before Python's
recursion limit would turn it into an internal error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from components.common.errors import AprflowError
from components.common.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH


class YamlRefusedError(AprflowError):
    """YAML that aprflow refuses to load: too large, too deeply nested, or using an alias.

    Neither a ``yaml.YAMLError`` nor a ValueError, so that it passes the callers' handlers of
    YAML that does not parse and reaches the user with its own reason.
    """


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and nesting deeper than ``MAX_YAML_DEPTH``."""

    def __init__(self, text: str, what: str) -> None:
        super().__init__(text)
        self.what = what
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """PyYAML's ``Composer.compose_node`` (yaml/composer.py), with the two checks first."""
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            raise YamlRefusedError(
                f"{self.what}: YAML aliases (*{anchor[:40]}) are not accepted: write the value "
                "out in full"
            )
        if self.depth >= MAX_YAML_DEPTH:
            raise YamlRefusedError(
                f"{self.what}: YAML nested more than {MAX_YAML_DEPTH} levels deep is not accepted"
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _too_large(what: str) -> YamlRefusedError:
    return YamlRefusedError(f"{what} is more than {MAX_YAML_BYTES:,} bytes of YAML: not accepted")


def load_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load(text)`` for user input, refusing what would cost unbounded memory or time.

    Args:
        text: the YAML text.
        what: names the input in messages, e.g. ``config run.yaml`` or ``--set n_models``.

    Returns:
        The loaded value (``None`` for empty text), as ``yaml.safe_load`` returns it.

    Raises:
        YamlRefusedError: for text longer than ``MAX_YAML_BYTES``, an alias or nesting deeper
            than ``MAX_YAML_DEPTH`` (one line that quotes none of the text).
        yaml.YAMLError: for text that is not YAML, as ``yaml.safe_load`` raises it.
    """
    # A character is at least one UTF-8 byte: a text too long in characters is not encoded.
    if len(text) > MAX_YAML_BYTES or len(text.encode(errors="replace")) > MAX_YAML_BYTES:
        raise _too_large(what)
    loader = _BoundedLoader(text, what)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, what: str) -> Any:
    """:func:`load_yaml` of a file's text, reading at most one byte more than the bound (so a
    huge file, or an endless one such as /dev/zero, costs no memory).

    Raises:
        OSError, UnicodeDecodeError: for a file that cannot be read as UTF-8 text.
        YamlRefusedError, yaml.YAMLError: as :func:`load_yaml`.
    """
    with Path(path).open("rb") as file:
        data = file.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise _too_large(what)
    return load_yaml(data.decode("utf-8"), what)
