"""Span attributes, when OpenTelemetry is installed (it is optional)."""

from __future__ import annotations

from typing import Any

_trace: Any
try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised when the extra is absent
    _trace = None

NAME = "prompt_registry.prompt.name"
VERSION = "prompt_registry.prompt.version"
LABEL = "prompt_registry.prompt.label"


def annotate(name: str, version: int | None, label: str | None) -> None:
    """Adds the prompt's name, version and label to the current span, if any."""
    if _trace is None:
        return
    span: Any = _trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(NAME, name)
    if version is not None:
        span.set_attribute(VERSION, version)
    if label is not None:
        span.set_attribute(LABEL, label)
