"""The registry stopped: a stale copy when one is cached, else the
fallback, else a typed error, within the timeout."""

from __future__ import annotations

import time

import pytest
from prompt_registry import Fallback, Registry, RegistryUnavailable

from .conftest import Server, wait_until


def test_with_nothing_cached_the_fallback_is_served_while_the_server_is_stopped(
    own_server: Server, name: str
) -> None:
    own_server.stop()
    with Registry(own_server.url, own_server.key, timeout=1.0, push=False) as registry:
        prompt = registry.get_prompt(name, fallback=Fallback("Hello {{who}}", {"who": {"default": "you"}}))
        assert prompt.is_fallback
        assert prompt.version is None
        assert prompt.compile() == "Hello you"
        assert registry.get_prompt(name, fallback=lambda: "Hi {{x}}").compile(x="y") == "Hi y"
        assert registry.metrics().fallbacks_served == 2


def test_without_a_fallback_a_typed_error_comes_within_the_timeout(own_server: Server, name: str) -> None:
    own_server.stop()
    with Registry(own_server.url, own_server.key, timeout=1.0, push=False) as registry:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            registry.get_prompt(name)
        # A generous bound: the point is that it does not hang.
        assert time.monotonic() - started < 5.0


def test_a_cached_prompt_is_served_stale_while_the_server_is_stopped(own_server: Server, name: str) -> None:
    own_server.prompt_with_versions(name, 1)
    with Registry(
        own_server.url, own_server.key, timeout=1.0, cache_ttl_seconds=0.1, stale_retry_seconds=0.1
    ) as registry:
        assert registry.wait_for_push(10)
        assert registry.get_prompt(name).version == 1
        own_server.stop()
        time.sleep(0.2)
        assert wait_until(lambda: registry.get_prompt(name).is_stale, timeout=5.0)
        prompt = registry.get_prompt(name)
        assert prompt.version == 1
        assert prompt.compile(who="Ada") == "Version 1: Ada"
        assert registry.metrics().stale_served >= 1
        own_server.start()
        assert wait_until(lambda: not registry.get_prompt(name).is_stale, timeout=10.0)
        # The event stream reconnects too, and promotions reach the cache again.
        assert registry.wait_for_push(10)
        own_server.create_version(name, {"template": "Version 2: {{who}}", "variables": {"who": {}}})
        assert wait_until(lambda: registry.get_prompt(name).version == 2, timeout=5.0)
