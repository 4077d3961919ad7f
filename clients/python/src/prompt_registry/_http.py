"""Requests with a deadline and bounded retries, and problem+json decoding."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ._errors import ApiError, AuthenticationError, PromptNotFound, RegistryUnavailable

log = logging.getLogger("prompt_registry")


@dataclass(frozen=True)
class RetryPolicy:
    """How long one call may take in all, and how it retries inside that.

    ``timeout`` bounds a whole call, retries and their pauses included: a
    first fetch never waits longer. Connection failures, timeouts, 429 and
    5xx are retried at most ``max_retries`` times, after ``backoff``,
    ``2 × backoff``, ``4 × backoff``… seconds, while the deadline allows.
    """

    timeout: float = 3.0
    max_retries: int = 2
    backoff: float = 0.1


def prompt_path(name: str) -> str:
    # Names may hold `/`; the path segment must not.
    return "/v1/prompts/" + quote(name, safe="")


def problem(response: httpx.Response) -> ApiError:
    """The 4xx ``response`` as the exception that says what to do about it."""
    title, detail, errors = response.reason_phrase, "", []
    try:
        body = response.json()
        if isinstance(body, dict):
            title = str(body.get("title") or title)
            detail = str(body.get("detail") or "")
            errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    except ValueError:
        pass
    status = response.status_code
    cls = PromptNotFound if status == 404 else AuthenticationError if status in (401, 403) else ApiError
    return cls(status, title, detail, errors)


def send(
    client: httpx.Client,
    policy: RetryPolicy,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    timeout: float | None = None,
) -> httpx.Response:
    """The first answer below 500 (other than 429), within the deadline.

    Raises:
        RegistryUnavailable: unreachable, timed out, or 5xx/429 on every try.
    """
    budget = policy.timeout if timeout is None else timeout
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RegistryUnavailable(f"{method} {path}: no answer within {budget:g} s")
        try:
            response = client.request(
                method, path, params=params, headers=headers, json=json, timeout=remaining
            )
        except httpx.TransportError as e:
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        else:
            if response.status_code < 500 and response.status_code != 429:
                return response
            why = f"answered {response.status_code}"
        delay = policy.backoff * 2**attempt
        attempt += 1
        if attempt > policy.max_retries or time.monotonic() + delay >= deadline:
            raise RegistryUnavailable(f"{method} {path}: {why}")
        time.sleep(delay)
