"""The server's split rule: which arm of a weighted label a subject gets.

``SHA-256(prompt "\\n" label "\\n" subject)``, its first 8 bytes as a
big-endian integer, modulo 10,000; arms cover consecutive ranges of
``weight × 100`` points in order (``crates/domain/src/prompt/label.rs``).
The client keys its cache of split labels by this point, so two subjects in
the same point share one entry; ``tests/test_split.py`` checks the rule
against the server over 10,000 subjects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

BUCKETS = 10_000


def bucket(prompt: str, label: str, subject: str) -> int:
    """Where ``subject`` falls in ``0..10_000`` for this prompt and label."""
    digest = hashlib.sha256(f"{prompt}\n{label}\n{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose(weights: Sequence[tuple[int, int]], point: int) -> int:
    """The version of the arm ``point`` falls in; ``weights`` is ``[(version, weight %)]``."""
    upto = 0
    for version, weight in weights:
        upto += weight * (BUCKETS // 100)
        if point < upto:
            return version
    return weights[-1][0]
