"""Templates and their variables: the server's render rules, in Python.

This mirrors ``crates/domain/src/prompt/template.rs``. A placeholder is
``{{ name }}`` (spaces only inside the braces); every declared variable is
filled from the values, else its default, else, when it is optional, with
the empty string; a value for an undeclared name, a missing required value,
and a value of the wrong type are each an error, and all of them are
reported at once, in the server's words. ``None`` counts as no value, as
JSON ``null`` does on the server. A non-string value renders as compact
JSON, written as the server writes it.

``tests/fixtures/render_cases.json`` holds the cases that a Python test and
a Rust test (against the server's ``/render``) both check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import _json
from ._errors import PromptTooLarge, VariableProblem, VariablesError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

#: The server's default ``render.max_output_bytes``.
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024

VariableType = Literal["string", "number", "boolean", "json"]


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """How a version declares one variable.

    ``type`` ``None`` accepts any value. ``has_default`` tells a ``None``
    default from no default (a JSON ``null`` default is no default, as on
    the server).
    """

    type: VariableType | None
    required: bool
    default: Any = None
    description: str | None = None
    origin: str | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VariableSpec:
        """A spec as the API writes it; ``required`` absent follows from ``default``."""
        default = raw.get("default")
        has_default = default is not None
        required = raw.get("required")
        ty = raw.get("type")
        if ty not in (None, "string", "number", "boolean", "json"):
            raise ValueError(f"unknown variable type {ty!r}")
        return cls(
            type=ty,
            required=(not has_default if required is None else bool(required)) and not has_default,
            default=default,
            description=raw.get("description"),
            origin=raw.get("from"),
        )


def _accepts(ty: VariableType, value: Any) -> bool:
    if ty == "string":
        return isinstance(value, str)
    if ty == "number":
        return _json.type_name(value) == "number"
    if ty == "boolean":
        return isinstance(value, bool)
    return True


def _scan(text: str) -> list[tuple[str, str | None]] | None:
    """``text`` as (literal, placeholder name or None) pieces.

    Includes (``{{> p@3}}``) stay literal: stored versions have them
    expanded already. A text that does not scan (never so for a stored
    version) is left as it is, as the server does.
    """
    pieces: list[tuple[str, str | None]] = []
    rest = 0
    copied = 0
    while (start := text.find("{{", rest)) >= 0:
        inner_start = start + 2
        close = text.find("}}", inner_start)
        if close < 0:
            return None
        inner = text[inner_start:close]
        end = close + 2
        if inner.lstrip(" ").startswith(">"):
            if not inner.lstrip(" ")[1:].strip(" "):
                return None
            rest = end
            continue
        name = inner.strip(" ")
        if not _IDENTIFIER.fullmatch(name):
            return None
        pieces.append((text[copied:start], name))
        copied = rest = end
    pieces.append((text[copied:], None))
    return pieces


class _Text:
    __slots__ = ("pieces", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        scanned = _scan(text)
        self.pieces = scanned if scanned is not None else [(text, None)]

    def fill(self, values: Mapping[str, str]) -> str:
        return "".join(lit + (values.get(name, "") if name is not None else "") for lit, name in self.pieces)


class CompiledTemplate:
    """A template and its variables, ready to render many times."""

    __slots__ = ("_messages", "_text", "kind", "max_output_bytes", "variables")

    def __init__(
        self,
        template: str | Sequence[Mapping[str, str]],
        variables: Mapping[str, VariableSpec],
        *,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        self.variables = dict(variables)
        self.max_output_bytes = max_output_bytes
        if isinstance(template, str):
            self.kind: Literal["text", "chat"] = "text"
            self._text: _Text | None = _Text(template)
            self._messages: list[tuple[str, _Text]] = []
        else:
            self.kind = "chat"
            self._text = None
            self._messages = [(m["role"], _Text(m["content"])) for m in template]

    def resolve(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Each declared variable's text, or every problem at once."""
        problems = [
            VariableProblem(name, "extra", f"variable `{name}` is not declared by this version")
            for name in sorted(values)
            if name not in self.variables
        ]
        resolved: dict[str, str] = {}
        for name in sorted(self.variables):
            spec = self.variables[name]
            value = values.get(name)
            if value is None:
                value = spec.default
            origin = f" (declared by include {spec.origin})" if spec.origin else ""
            if value is None:
                if spec.required:
                    problems.append(
                        VariableProblem(
                            name,
                            "missing",
                            f"variable `{name}`{origin} is required and has no value or default",
                        )
                    )
                else:
                    resolved[name] = ""
                continue
            got = _json.type_name(value)
            if spec.type is not None and not _accepts(spec.type, value):
                problems.append(
                    VariableProblem(
                        name, "wrong_type", f"variable `{name}`{origin} must be a {spec.type}, got {got}"
                    )
                )
                continue
            if isinstance(value, str):
                resolved[name] = value
                continue
            try:
                resolved[name] = _json.dumps(value)
            except _json.NotJson as e:
                problems.append(
                    VariableProblem(
                        name, "wrong_type", f"variable `{name}`{origin} must be a JSON value, got {e.what}"
                    )
                )
        if problems:
            raise VariablesError(problems)
        return resolved

    def render(self, values: Mapping[str, Any]) -> str | list[dict[str, str]]:
        resolved = self.resolve(values)
        if self._text is not None:
            out: str | list[dict[str, str]] = self._text.fill(resolved)
            self._check_size([out] if isinstance(out, str) else [])
            return out
        messages = [{"role": role, "content": text.fill(resolved)} for role, text in self._messages]
        self._check_size([m["content"] for m in messages])
        return messages

    def _check_size(self, texts: list[str]) -> None:
        chars = sum(len(t) for t in texts)
        # A character is 1 to 4 bytes: count bytes only when it could matter.
        if chars * 4 <= self.max_output_bytes:
            return
        size = sum(len(t.encode()) for t in texts)
        if size > self.max_output_bytes:
            raise PromptTooLarge(size, self.max_output_bytes)


def placeholders(template: str | Sequence[Mapping[str, str]]) -> list[str]:
    """Every placeholder name of a template, in order of first use."""
    texts = [template] if isinstance(template, str) else [m["content"] for m in template]
    seen: dict[str, None] = {}
    for text in texts:
        for _, name in _scan(text) or []:
            if name is not None:
                seen.setdefault(name)
    return list(seen)
