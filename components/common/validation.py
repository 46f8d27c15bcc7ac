"""One validation style for configs, recipes and specs: a value has a type and a range, and a bad
one is one line naming the key, the value and what is valid.

Type checks follow the annotations (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``,
``float | None``, ``tuple[float, float]``, ``tuple[float, ...]``); ranges are data
(:class:`Bound`), so a table of them documents and checks a schema at once::

    check_type("recipe field 'lr'", 0.1, float)          # 0.1
    Bound(low=0, low_open=True).check("recipe field 'lr'", -1.0)
    # ValueError: recipe field 'lr' must be > 0, got -1.0
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any

_NAMES = {int: "an int", float: "a number", bool: "a bool", str: "a str", list: "a list"}


def type_name(hint: Any) -> str:
    """``an int``, ``a number``, ``a number or null``, ``[number, number]``, ... for messages."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list of numbers"
        return "[" + ", ".join("number" for _ in args) + "]"
    return _NAMES.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_type(label: str, value: Any, hint: Any) -> Any:
    """Returns ``value`` as ``hint`` wants it, or raises ValueError ``{label} must be ...``.

    Conversions are only the lossless ones JSON and YAML need: an int for a float, an integral
    float for an int (Kubeflow hands numbers over as floats), a list for a tuple.
    """
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return check_type(label, value, inner)
        except ValueError:
            raise ValueError(f"{label} must be {type_name(hint)}, got {value!r}") from None
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        if (
            not isinstance(value, list | tuple)
            or (fixed and len(value) != len(args))
            or not all(_is_number(v) and math.isfinite(v) for v in value)
        ):
            raise ValueError(f"{label} must be {type_name(hint)}, got {value!r}")
        return tuple(float(v) for v in value)
    if hint is float and _is_number(value):
        if not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    # A bool is an int to Python, but only a bool field takes one.
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
        raise ValueError(f"{label} must be {type_name(hint)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Bound:
    """A valid range of a number (``None``: unbounded on that side) or a set of choices.

    Attributes:
        low, high: the ends; ``low_open`` / ``high_open`` exclude them.
        choices: the valid values instead of a range.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def contains(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``in [0, 1)``, ``> 0``, ``>= 1``, ``one of sgd, lamb``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def check(self, label: str, value: Any) -> None:
        """Raises ValueError ``{label} must be {range}, got {value}`` outside the range; a
        list or tuple is checked element by element; None (an optional value unset) passes."""
        many = isinstance(value, list | tuple)
        for item in value if many else (value,):
            if item is not None and not self.contains(item):
                each = " (each value)" if many else ""
                raise ValueError(f"{label}{each} must be {self.describe()}, got {value!r}")


def parse_assignments(pairs: list[str], example: str) -> dict[str, Any]:
    """Parses ``--set key=value`` strings; values are YAML scalars or lists (``[a, b]``).

    Raises:
        ValueError: for a pair without ``=`` or a value that is not YAML (``example`` shows
            the form).
    """
    import yaml

    parsed = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r} is not key=value (e.g. --set {example})")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ValueError(f"--set {pair!r}: the value is not valid YAML") from None
    return parsed
