"""Prompts over MCP, with the official Python SDK's Streamable HTTP client
against the release binary: listing, rendering, `_version`, strict errors,
keys, and `notifications/prompts/list_changed`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from conftest import Server
from mcp import ClientSession, types
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError
from registry import create_prompt, create_version, move_label

# The SDK deprecates `streamablehttp_client` for `streamable_http_client`
# (and 2.x removes it); the pinned 1.x keeps it, with `headers=`, which is
# all these tests need.
pytestmark = pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")

TRIAGE = {
    "template": [
        {"role": "system", "content": "You triage tickets in a {{tone}} tone."},
        {"role": "user", "content": "Customer {{customer}} has {{count}} open tickets."},
    ],
    "variables": {
        "customer": {"type": "string", "description": "Who wrote in"},
        "count": {"type": "number"},
        "tone": {"type": "string", "default": "calm"},
    },
}


def seed(server: Server) -> None:
    create_prompt(server, "support/triage", "Sorts support tickets")
    create_version(server, "support/triage", TRIAGE)
    create_prompt(server, "greeting")
    create_version(server, "greeting", {"template": "Hello {{name}}!", "variables": {"name": {}}})
    create_version(server, "greeting", {"template": "Hi {{name}}, welcome back.", "variables": {"name": {}}})


def with_session(
    server: Server,
    scenario: Callable[[ClientSession], Awaitable[Any]],
    key: str | None = None,
    message_handler: Callable[[Any], Awaitable[None]] | None = None,
) -> Any:
    """Runs `scenario` in an initialized MCP session of `key` (the admin key by default)."""

    async def run() -> Any:
        headers = {"Authorization": f"Bearer {key or server.admin_key}"}
        async with (
            streamablehttp_client(f"{server.base_url}/mcp", headers=headers) as (read, write, _),
            ClientSession(read, write, message_handler=message_handler) as session,
        ):
            init = await session.initialize()
            assert init.serverInfo.name == "prompt-registry"
            assert init.capabilities.prompts is not None
            assert init.capabilities.prompts.listChanged is True
            return await scenario(session)

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def texts(result: types.GetPromptResult) -> list[tuple[str, str]]:
    out = []
    for message in result.messages:
        assert isinstance(message.content, types.TextContent), message
        out.append((message.role, message.content.text))
    return out


def test_mcp_lists_prompts_with_their_declared_arguments(server: Server) -> None:
    seed(server)
    create_prompt(server, "empty")

    async def scenario(session: ClientSession) -> list[types.Prompt]:
        return (await session.list_prompts()).prompts

    prompts = {p.name: p for p in with_session(server, scenario)}
    assert sorted(prompts) == ["empty", "greeting", "support/triage"]
    triage = prompts["support/triage"]
    assert triage.description == "Sorts support tickets"
    arguments = {a.name: a for a in triage.arguments or []}
    assert {name: a.required for name, a in arguments.items()} == {
        "count": True,
        "customer": True,
        "tone": False,
        "_label": False,
        "_version": False,
    }
    assert arguments["customer"].description == "Who wrote in"
    assert "_label" in (arguments["_version"].description or "")
    assert [a.name for a in prompts["empty"].arguments or []] == ["_label", "_version"]


def test_mcp_renders_chat_and_text_prompts_with_arguments(server: Server) -> None:
    seed(server)

    async def scenario(session: ClientSession) -> tuple[types.GetPromptResult, types.GetPromptResult]:
        chat = await session.get_prompt("support/triage", {"customer": "Ada", "count": "3", "tone": "brisk"})
        text = await session.get_prompt("greeting", {"name": "Grace"})
        return chat, text

    chat, text = with_session(server, scenario)
    # `system` has no MCP role: it arrives as a user message.
    assert texts(chat) == [
        ("user", "You triage tickets in a brisk tone."),
        ("user", "Customer Ada has 3 open tickets."),
    ]
    assert chat.description == "Prompt `support/triage`, version 1 (label `production`)"
    assert texts(text) == [("user", "Hi Grace, welcome back.")]
    assert text.description == "Prompt `greeting`, version 2 (label `production`)"


def test_mcp_missing_and_extra_arguments_raise_an_error_naming_them(server: Server) -> None:
    seed(server)

    async def scenario(session: ClientSession) -> McpError:
        with pytest.raises(McpError) as raised:
            await session.get_prompt("support/triage", {"count": "2", "colour": "blue"})
        return raised.value

    error = with_session(server, scenario)
    assert error.error.code == types.INVALID_PARAMS
    assert "`customer`" in error.error.message
    assert "is required" in error.error.message
    assert "`colour`" in error.error.message


def test_mcp_version_and_label_arguments_select_an_older_version(server: Server) -> None:
    seed(server)
    # Version 1 also gets a label of its own.
    move_label(server, "greeting", "staging", 1)

    async def scenario(session: ClientSession) -> list[types.GetPromptResult]:
        return [
            await session.get_prompt("greeting", {"name": "Lin", "_version": "1"}),
            await session.get_prompt("greeting", {"name": "Lin", "_label": "staging"}),
            await session.get_prompt("greeting", {"name": "Lin"}),
        ]

    by_number, by_label, current = with_session(server, scenario)
    assert texts(by_number) == [("user", "Hello Lin!")]
    assert by_number.description == "Prompt `greeting`, version 1 (by number)"
    assert texts(by_label) == [("user", "Hello Lin!")]
    assert by_label.description == "Prompt `greeting`, version 1 (label `staging`)"
    assert texts(current) == [("user", "Hi Lin, welcome back.")]


def test_mcp_refuses_a_wrong_key(server: Server) -> None:
    async def scenario(session: ClientSession) -> None:
        raise AssertionError("a session opened with a wrong key")

    # The client's task group fails with the HTTP error of its first POST.
    with pytest.raises(BaseExceptionGroup) as raised:
        with_session(server, scenario, key="not-a-valid-key-0000000000000000")
    refusal = raised.value.exceptions[0]
    assert isinstance(refusal, httpx.HTTPStatusError), repr(raised.value)
    assert refusal.response.status_code == 401
    # What the client was told: the registry's usual 401 problem.
    res = httpx.post(
        f"{server.base_url}/mcp",
        headers={
            "Authorization": "Bearer not-a-valid-key-0000000000000000",
            "Accept": "application/json, text/event-stream",
        },
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
    )
    assert res.status_code == 401
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["status"] == 401


def test_mcp_sends_list_changed_after_a_prompt_is_created(server: Server) -> None:
    async def run() -> float:
        changed = asyncio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ServerNotification) and isinstance(
                message.root, types.PromptListChangedNotification
            ):
                changed.set()

        async def scenario(session: ClientSession) -> float:
            # A round trip, and a moment for the client's GET stream to open.
            await session.list_prompts()
            await asyncio.sleep(0.5)
            start = time.monotonic()
            await asyncio.to_thread(create_prompt, server, "arrives-later")
            await asyncio.wait_for(changed.wait(), timeout=5)
            return time.monotonic() - start

        headers = server.headers()
        async with (
            streamablehttp_client(f"{server.base_url}/mcp", headers=headers) as (read, write, _),
            ClientSession(read, write, message_handler=on_message) as session,
        ):
            await session.initialize()
            return await scenario(session)

    elapsed = asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert elapsed < 5


def test_mcp_works_on_postgresql(start_server: Callable[..., Server], pg_url: str) -> None:
    server = start_server(database_url=pg_url)
    seed(server)

    async def scenario(session: ClientSession) -> tuple[list[str], types.GetPromptResult]:
        names = sorted(p.name for p in (await session.list_prompts()).prompts)
        return names, await session.get_prompt("greeting", {"name": "Pg"})

    names, text = with_session(server, scenario)
    assert names == ["greeting", "support/triage"]
    assert texts(text) == [("user", "Hi Pg, welcome back.")]
