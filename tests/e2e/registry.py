"""Small REST helpers for the end-to-end tests: the registry's own API, as
documented in docs/authoring.md and docs/labels.md."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from conftest import Server

TIMEOUT_S = 10.0


def prompt_path(name: str) -> str:
    """`/v1/prompts/{name}` with the name percent-encoded (`a/b` → `a%2Fb`)."""
    return f"/v1/prompts/{urllib.parse.quote(name, safe='')}"


def _send(server: Server, method: str, path: str, body: dict[str, Any], expected: tuple[int, ...]) -> dict:
    res = httpx.request(method, server.base_url + path, json=body, headers=server.headers(), timeout=TIMEOUT_S)
    if res.status_code not in expected:
        raise AssertionError(f"{method} {path} answered {res.status_code}: {res.text}")
    return res.json()


def create_prompt(server: Server, name: str, description: str | None = None) -> dict:
    """POST /v1/prompts; the created prompt."""
    body: dict[str, Any] = {"name": name}
    if description is not None:
        body["description"] = description
    return _send(server, "POST", "/v1/prompts", body, (201,))


def create_version(server: Server, name: str, body: dict) -> dict:
    """POST /v1/prompts/{name}/versions with `body` (template, variables, …); the created version."""
    return _send(server, "POST", f"{prompt_path(name)}/versions", body, (201,))


def move_label(server: Server, name: str, label: str, version: int) -> dict:
    """PUT /v1/prompts/{name}/labels/{label} to `version` (the admin key may move protected labels)."""
    path = f"{prompt_path(name)}/labels/{urllib.parse.quote(label, safe='')}"
    return _send(server, "PUT", path, {"version": version}, (200, 201))
