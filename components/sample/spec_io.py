"""Reading and writing populations of specs as JSON lines (no torch).

Each line is one record ``{"spec": {...}, "spec_hash": ..., "flops": ..., "params": ...,
"acts": ...}`` with the complexity at 224 px and the spec's own stem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from components.common.files import atomic_write_text
from components.common.validation import short_repr
from components.sample.space import AnyNetSpec, complexity


def spec_record(spec: AnyNetSpec) -> dict[str, Any]:
    """The JSONL record of a spec: the spec, its hash and its complexity at 224 px."""
    cx = complexity(spec, resolution=224, small_input=False)
    return {
        "spec": spec.to_dict(),
        "spec_hash": spec.spec_hash(),
        "flops": cx.flops,
        "params": cx.params,
        "acts": cx.acts,
    }


def write_specs_jsonl(path: str | os.PathLike, specs: Iterable[AnyNetSpec]) -> None:
    """Atomically writes one :func:`spec_record` per line.

    Raises:
        ValueError: If a spec is structurally invalid (nothing is written).
    """
    lines = [json.dumps(spec_record(spec), sort_keys=True) + "\n" for spec in specs]
    atomic_write_text(path, "".join(lines))


def read_specs_jsonl(path: str | os.PathLike) -> list[AnyNetSpec]:
    """Reads the specs of a file written by :func:`write_specs_jsonl` (blank lines skipped).

    Raises:
        ValueError: Naming the file and line for invalid JSON, a record without "spec", a
            bad spec field, a structurally invalid spec or a spec_hash that does not match.
    """
    specs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err})") from err
            if not isinstance(record, dict) or "spec" not in record:
                raise ValueError(f'{where}: expected an object with a "spec" field')
            try:
                spec = AnyNetSpec.from_dict(record["spec"])
                spec.validate(design_space=False)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
            if "spec_hash" in record and record["spec_hash"] != spec.spec_hash():
                raise ValueError(
                    f"{where}: spec_hash {short_repr(record['spec_hash'])} does not match the spec "
                    f"({spec.spec_hash()!r}); the line was edited, rewrite the file"
                )
            specs.append(spec)
    return specs
