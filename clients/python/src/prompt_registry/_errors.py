"""The exceptions the client raises: one base class, one type per decision
the application can make (fix the values, fix the name, wait, fix the key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


class RegistryError(Exception):
    """Base of every error this package raises."""


ProblemKind = Literal["missing", "extra", "wrong_type"]


@dataclass(frozen=True, slots=True)
class VariableProblem:
    """One variable a compile refused: its name, what is wrong, and the
    server's wording of it."""

    name: str
    kind: ProblemKind
    message: str


class VariablesError(RegistryError, ValueError):
    """Missing, undeclared (``extra``) or wrongly typed values: all of them."""

    def __init__(self, problems: Sequence[VariableProblem]) -> None:
        self.problems = list(problems)
        detail = "; ".join(p.message for p in self.problems)
        super().__init__(f"{len(self.problems)} variable error(s): {detail}")

    @property
    def missing(self) -> list[str]:
        return [p.name for p in self.problems if p.kind == "missing"]

    @property
    def extra(self) -> list[str]:
        return [p.name for p in self.problems if p.kind == "extra"]

    @property
    def wrong_type(self) -> list[str]:
        return [p.name for p in self.problems if p.kind == "wrong_type"]


class PromptTooLarge(RegistryError, ValueError):
    """The compiled prompt would be larger than the server allows to render."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"the rendered prompt would be {size} bytes; the limit is {limit}")


class ApiError(RegistryError):
    """The registry answered with a problem (RFC 9457)."""

    def __init__(self, status: int, title: str, detail: str, errors: Sequence[dict[str, str]] = ()) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")


class PromptNotFound(ApiError):
    """No such prompt, version or label (a removed label included): 404."""


class AuthenticationError(ApiError):
    """The key is missing, unknown, revoked, or lacks the scope: 401 or 403."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, timed out or answered 5xx, and
    there was nothing cached and no fallback to serve instead."""
