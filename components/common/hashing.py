"""Canonical JSON and content hashes: the identity of specs, datasets, trials and studies."""

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Serialises ``value`` to JSON with sorted keys and no whitespace, so equal data hash equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(value: Any, length: int = 16) -> str:
    """Returns the first ``length`` hex digits of the SHA-256 of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]
