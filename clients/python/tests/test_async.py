"""The async twins: fetch, push invalidation, fallback, runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from prompt_registry import AsyncRegistry, Fallback, PromptNotFound

from .conftest import Server
from .test_runs import runs_of


@pytest.fixture
async def aregistry(server: Server) -> AsyncIterator[AsyncRegistry]:
    r = AsyncRegistry(server.url, server.key, timeout=2.0)
    assert await r.wait_for_push(10)
    yield r
    await r.close()


async def test_async_fetch_is_cached_and_deduplicated_across_tasks(
    server: Server, aregistry: AsyncRegistry, name: str
) -> None:
    server.prompt_with_versions(name, 2)
    prompts = await asyncio.gather(*(aregistry.get_prompt(name) for _ in range(50)))
    assert {p.version for p in prompts} == {1}
    assert aregistry.metrics().fetches == 1
    assert (await aregistry.get_prompt(name, version=2)).compile(who="Ada") == "Version 2: Ada"
    with pytest.raises(PromptNotFound):
        await aregistry.get_prompt(name, label="missing")


async def test_async_promotion_arrives_through_the_event_stream(
    server: Server, aregistry: AsyncRegistry, name: str
) -> None:
    server.prompt_with_versions(name, 2)
    assert (await aregistry.get_prompt(name)).version == 1
    moved = time.perf_counter()
    await asyncio.to_thread(server.move_label, name, "production", {"version": 2})
    deadline = time.monotonic() + 5
    while (await aregistry.get_prompt(name)).version != 2:
        assert time.monotonic() < deadline, "the promotion did not arrive within 5 s"
        await asyncio.sleep(0.005)
    print(f"\nasync promotion to serving (ms): {(time.perf_counter() - moved) * 1000:.1f}")


async def test_async_fallback_when_the_server_is_stopped(own_server: Server, name: str) -> None:
    own_server.stop()
    async with AsyncRegistry(own_server.url, own_server.key, timeout=1.0, push=False) as r:
        prompt = await r.get_prompt(name, fallback=Fallback("Hi {{who}}"))
        assert prompt.is_fallback
        assert prompt.compile(who="x") == "Hi x"


async def test_async_runs_are_logged_with_the_version_served(
    server: Server, aregistry: AsyncRegistry, name: str
) -> None:
    server.prompt_with_versions(name, 1)

    @aregistry.trace(name)
    async def call(q: str) -> str:
        await asyncio.sleep(0.01)
        return q * 2

    assert await call("ab") == "abab"
    async with aregistry.trace(name, input={"who": "x"}) as run:
        run.output = {"ok": True}
    prompt = await aregistry.get_prompt(name)
    for i in range(100):
        aregistry.log_run(prompt, input={"who": str(i)})
    assert await aregistry.flush(10)
    runs = runs_of(server, name)
    assert len(runs) == 102
    assert {r["output"] if not isinstance(r["output"], dict) else "dict" for r in runs if r["output"]} == {
        "abab",
        "dict",
    }
    slow = next(r for r in runs if r["output"] == "abab")
    assert slow["latency_ms"] >= 10
