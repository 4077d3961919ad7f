"""What ``get_prompt`` returns: one version of a prompt, ready to compile."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from ._template import (
    DEFAULT_MAX_OUTPUT_BYTES,
    CompiledTemplate,
    VariableSpec,
    placeholders,
)

Template: TypeAlias = str | Sequence[Mapping[str, str]]


@dataclass(frozen=True, eq=False)
class Prompt:
    """One version of a prompt as it was served.

    ``label`` is the label it was served under (``None`` for a numbered
    fetch), ``split`` whether that label is a weighted rollout, ``is_stale``
    whether it was kept past its TTL because the registry could not be
    reached, and ``is_fallback`` whether it is the application's own
    fallback (then ``version`` is ``None``).
    """

    name: str
    version: int | None
    label: str | None
    kind: Literal["text", "chat"]
    template: str | list[dict[str, str]]
    variables: Mapping[str, VariableSpec]
    config: Mapping[str, Any]
    is_fallback: bool = False
    is_stale: bool = False
    split: bool = False
    id: str | None = None
    _compiled: CompiledTemplate = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", CompiledTemplate(self.template, self.variables))

    def compile(self, **values: Any) -> str | list[dict[str, str]]:
        """The template filled with ``values``, exactly as the server renders it.

        A text prompt gives a string, a chat prompt a list of
        ``{"role", "content"}`` messages.

        Raises:
            VariablesError: every missing, undeclared and wrongly typed value, at once.
            PromptTooLarge: the result would exceed the server's render limit.
        """
        return self._compiled.render(values)

    def stale(self) -> Prompt:
        return replace(self, is_stale=True) if not self.is_stale else self

    @classmethod
    def from_version(cls, body: Mapping[str, Any], *, label: str | None, split: bool) -> Prompt:
        """A prompt from the API's version object."""
        template = body["template"]
        return cls(
            name=body["prompt_name"],
            version=int(body["version"]),
            label=label,
            kind="chat" if body.get("kind") == "chat" else "text",
            template=template if isinstance(template, str) else [dict(m) for m in template],
            variables={k: VariableSpec.from_json(v) for k, v in (body.get("variables") or {}).items()},
            config=dict(body.get("config") or {}),
            split=split,
            id=body.get("id"),
        )


@dataclass(frozen=True)
class Fallback:
    """What to serve when the registry cannot be reached and nothing is cached.

    ``variables`` declares the variables as the API does
    (``{"city": {"type": "string", "default": "Paris"}}``); without it,
    every placeholder is a required variable of any type, so a fallback is
    compiled as strictly as a served version.
    """

    template: Template
    variables: Mapping[str, Mapping[str, Any]] | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_prompt(self, name: str, label: str | None) -> Prompt:
        specs = (
            {k: VariableSpec.from_json(v) for k, v in self.variables.items()}
            if self.variables is not None
            else {n: VariableSpec(type=None, required=True) for n in placeholders(self.template)}
        )
        template = self.template if isinstance(self.template, str) else [dict(m) for m in self.template]
        return Prompt(
            name=name,
            version=None,
            label=label,
            kind="text" if isinstance(template, str) else "chat",
            template=template,
            variables=specs,
            config=dict(self.config),
            is_fallback=True,
        )


#: ``fallback=`` of ``get_prompt``: a template, a :class:`Fallback`, or a
#: callable that makes one (called only when it is needed).
FallbackArg: TypeAlias = Template | Fallback | Callable[[], Template | Fallback]


def fallback_prompt(arg: FallbackArg, name: str, label: str | None) -> Prompt:
    made = arg() if callable(arg) else arg
    if not isinstance(made, Fallback):
        made = Fallback(template=made)
    return made.to_prompt(name, label)


__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "Fallback", "FallbackArg", "Prompt", "fallback_prompt"]
