"""Fetching against the real server: fields, the cache, 304 revalidation,
push invalidation (timed), removed labels, prefetch."""

from __future__ import annotations

import time

import pytest
from prompt_registry import PromptNotFound, Registry

from .conftest import Server, events_seen, wait_until


def test_a_prompt_is_fetched_with_its_version_label_and_variables(
    server: Server, registry: Registry, name: str
) -> None:
    server.create_prompt(name)
    server.create_version(
        name,
        {
            "template": [{"role": "system", "content": "Be {{tone}}."}, {"role": "user", "content": "{{q}}"}],
            "variables": {"tone": {"type": "string", "default": "brief"}, "q": {"type": "string"}},
            "config": {"model": "gpt-4o-mini", "temperature": 0.2},
        },
    )
    events_seen(registry, 2)  # production moved to 1, version 1 created
    prompt = registry.get_prompt(name)
    assert (prompt.name, prompt.version, prompt.label, prompt.kind) == (name, 1, "production", "chat")
    assert not prompt.is_fallback
    assert not prompt.is_stale
    assert not prompt.split
    assert prompt.config == {"model": "gpt-4o-mini", "temperature": 0.2}
    assert prompt.variables["tone"].default == "brief"
    assert not prompt.variables["tone"].required
    assert prompt.variables["q"].required
    assert prompt.compile(q="Why?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why?"},
    ]
    # A second call is served from the cache: the very same object.
    assert registry.get_prompt(name) is prompt
    assert registry.metrics().fetches == 1


def test_numbered_latest_and_labelled_versions_are_distinct_entries(
    server: Server, registry: Registry, name: str
) -> None:
    server.prompt_with_versions(name, 3, labels=("staging",))
    assert registry.get_prompt(name, version=2).version == 2
    assert registry.get_prompt(name, version=2).label is None
    assert registry.get_prompt(name, label="latest").version == 3
    assert registry.get_prompt(name, label="staging").version == 1
    assert registry.get_prompt(name, label="active").version == 1
    with pytest.raises(ValueError, match="not both"):
        registry.get_prompt(name, label="staging", version=1)


def test_an_unknown_prompt_or_label_raises_not_found(server: Server, registry: Registry, name: str) -> None:
    with pytest.raises(PromptNotFound):
        registry.get_prompt(name)
    server.prompt_with_versions(name, 1)
    with pytest.raises(PromptNotFound) as raised:
        registry.get_prompt(name, label="canary", fallback="never used for a 404")
    assert raised.value.status == 404


def test_an_expired_entry_is_served_while_a_304_revalidates_it(server: Server, name: str) -> None:
    server.prompt_with_versions(name, 1)
    with Registry(server.url, server.key, cache_ttl_seconds=0.05, push=False) as registry:
        first = registry.get_prompt(name)
        time.sleep(0.1)
        # Expired: served at once, the same prompt, while one refresh runs.
        assert registry.get_prompt(name) is first
        assert wait_until(lambda: registry.metrics().not_modified >= 1)
        m = registry.metrics()
        assert m.fetches == 2
        assert m.not_modified == 1
        # Revalidated: fresh again, the same object (a 304 carries no body).
        assert registry.get_prompt(name) is first


def test_a_promotion_reaches_a_connected_client_through_the_event_stream(
    server: Server, registry: Registry, name: str
) -> None:
    server.prompt_with_versions(name, 2)
    assert registry.get_prompt(name).version == 1
    timings = []
    for target in (2, 1, 2):
        moved = time.perf_counter()
        server.move_label(name, "production", {"version": target})
        assert wait_until(lambda t=target: registry.get_prompt(name).version == t, timeout=5.0), (
            f"still serving {registry.get_prompt(name).version} 5 s after the move to {target}"
        )
        timings.append((time.perf_counter() - moved) * 1000)
    print(f"\npromotion to serving, with push (ms): {', '.join(f'{t:.1f}' for t in timings)}")
    assert registry.metrics().invalidations >= 3


def test_a_removed_label_stops_resolving(server: Server, registry: Registry, name: str) -> None:
    server.prompt_with_versions(name, 1, labels=("canary",))
    assert registry.get_prompt(name, label="canary").version == 1

    def gone() -> bool:
        try:
            registry.get_prompt(name, label="canary")
        except PromptNotFound:
            return True
        return False

    server.remove_label(name, "canary")
    assert wait_until(gone, timeout=5.0)
    # And it stays gone: nothing cached brings it back.
    assert gone()


def test_a_new_version_moves_latest(server: Server, registry: Registry, name: str) -> None:
    server.prompt_with_versions(name, 1)
    assert registry.get_prompt(name, label="latest").version == 1
    server.create_version(name, {"template": "v2", "activate": False})
    assert wait_until(lambda: registry.get_prompt(name, label="latest").version == 2)
    assert registry.get_prompt(name).version == 1


def test_prefetch_loads_many_prompts_in_batches_and_serves_them_from_the_cache(
    server: Server, name: str
) -> None:
    names = [f"{name}/{i}" for i in range(120)]
    for n in names:
        server.create_prompt(n)
        server.create_version(n, {"template": f"I am {n}"})
    with Registry(server.url, server.key, push=False) as registry:
        results = registry.prefetch([*names, (names[0], "nope")])
        assert len(results) == 121
        assert isinstance(results[-1], PromptNotFound)
        assert [p.compile() for p in results[:-1] if not isinstance(p, Exception)] == [
            f"I am {n}" for n in names
        ]
        for n in names:
            registry.get_prompt(n)
        assert registry.metrics().fetches == 0
