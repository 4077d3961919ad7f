"""Prompt Registry's Python client.

>>> from prompt_registry import Registry
>>> registry = Registry("http://127.0.0.1:8080", api_key="pr_…")  # doctest: +SKIP
>>> prompt = registry.get_prompt("support/triage")                  # doctest: +SKIP
>>> prompt.compile(question="Where is my order?")                   # doctest: +SKIP
"""

from ._async import AsyncRegistry
from ._core import Metrics
from ._errors import (
    ApiError,
    AuthenticationError,
    PromptNotFound,
    PromptTooLarge,
    RegistryError,
    RegistryUnavailable,
    VariableProblem,
    VariablesError,
)
from ._http import RetryPolicy
from ._prompt import Fallback, FallbackArg, Prompt
from ._runs import Run, RunTimer
from ._split import bucket
from ._sync import Registry
from ._template import VariableSpec

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncRegistry",
    "AuthenticationError",
    "Fallback",
    "FallbackArg",
    "Metrics",
    "Prompt",
    "PromptNotFound",
    "PromptTooLarge",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "RetryPolicy",
    "Run",
    "RunTimer",
    "VariableProblem",
    "VariableSpec",
    "VariablesError",
    "__version__",
    "bucket",
]
