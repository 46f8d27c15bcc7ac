"""One validation style for configs, recipes and specs: a value has a type and a range, and a bad
one is one line naming the key, the value and what is valid.

Type checks follow the annotations (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``,
``float | None``, ``tuple[float, float]``, ``tuple[float, ...]``); ranges are data
(:class:`Bound`), so a table of them documents and checks a schema at once::

    check_type("recipe field 'lr'", 0.1, float)          # 0.1
    Bound(low=0, low_open=True).check("recipe field 'lr'", -1.0)
    # ValueError: recipe field 'lr' must be > 0, got -1.0

A message quotes at most :data:`QUOTE_LIMIT` characters of a value (:func:`short_repr`), so a
10,000-element list or an expanded YAML alias gives one short line.
"""

from __future__ import annotations

import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any

_NAMES = {int: "an int", float: "a number", bool: "a bool", str: "a str", list: "a list"}
# Characters of a value an error message quotes.
QUOTE_LIMIT = 200
# reprlib stops after a few items per level and levels deep, so the repr of a huge or
# deeply nested value costs nothing before it is cut to QUOTE_LIMIT.
_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 20
_REPR.maxstring = _REPR.maxother = QUOTE_LIMIT
# A number as YAML 1.1 writes it but PyYAML reads as a string: its float resolver needs a dot
# and a signed exponent (PyYAML 6.0.3, yaml/resolver.py, the 'tag:yaml.org,2002:float'
# implicit resolver), so `1e-3` and `1e8` arrive as text.
_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def short_repr(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters (``...`` marks the cut)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int of more than sys.get_int_max_str_digits() digits
        text = f"<{type(value).__name__} too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    float for an int (Kubeflow hands numbers over as floats), a list for a tuple, and a number
    that YAML left as text (``1e-3``) for a number.
    """
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint in (int, float) and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        value = float(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return check_type(label, value, inner)
        except ValueError:
            raise ValueError(
                f"{label} must be {type_name(hint)}, got {short_repr(value)}"
            ) from None
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        if (
            not isinstance(value, list | tuple)
            or (fixed and len(value) != len(args))
            or not all(_is_number(v) and math.isfinite(v) for v in value)
        ):
            raise ValueError(f"{label} must be {type_name(hint)}, got {short_repr(value)}")
        return tuple(float(v) for v in value)
    if hint is float and _is_number(value):
        if not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number, got {short_repr(value)}")
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    # A bool is an int to Python, but only a bool field takes one.
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
        raise ValueError(f"{label} must be {type_name(hint)}, got {short_repr(value)}")
    return value


@dataclass(frozen=True)
class Bound:
    """A valid range of a number (``None``: unbounded on that side) or a set of choices.

    Attributes:
        low, high: the ends; ``low_open`` / ``high_open`` exclude them.
        choices: the valid values instead of a range.
        reason: why the range is what it is (the limits table's entries say; messages add it).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    reason: str = ""

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
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"

    def check(self, label: str, value: Any) -> None:
        """Raises ValueError ``{label} must be {range}, got {value}`` outside the range; a
        list or tuple is checked element by element; None (an optional value unset) passes."""
        many = isinstance(value, list | tuple)
        for item in value if many else (value,):
            if item is not None and not self.contains(item):
                each = " (each value)" if many else ""
                why = f": {self.reason}" if self.reason else ""
                raise ValueError(
                    f"{label}{each} must be {self.describe()}, got {short_repr(value)}{why}"
                )


def _number(value: float) -> str:
    """``4294967295`` for an integer (``:g`` would write ``4.29497e+09``), ``0.5`` else."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_assignments(pairs: list[str], example: str) -> dict[str, Any]:
    """Parses ``--set key=value`` strings; values are YAML scalars or lists (``[a, b]``).

    Raises:
        ValueError: for a pair without ``=`` or a value that is not YAML (``example`` shows
            the form).
    """
    import yaml

    from components.common.yamlsafe import load_yaml

    parsed = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {short_repr(pair)} is not key=value (e.g. --set {example})")
        try:
            parsed[key.strip()] = load_yaml(raw, f"--set {key[:100]}") if raw.strip() else ""
        except (yaml.YAMLError, ValueError):  # ValueError: an int too long to convert
            raise ValueError(f"--set {short_repr(pair)}: the value is not valid YAML") from None
    return parsed
