"""Run logging: every run of a batch found on the server, runs tied to
the version and label they were served under, OpenTelemetry attributes."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import pytest
from prompt_registry import Registry

from .conftest import Server


def runs_of(server: Server, name: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = server.admin.get(f"/v1/prompts/{quote(name, safe='')}/runs", params=params).json()
        runs.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return runs


def test_every_logged_run_is_found_on_the_server(server: Server, registry: Registry, name: str) -> None:
    server.prompt_with_versions(name, 2)
    server.move_label(name, "canary", {"version": 2})
    prod = registry.get_prompt(name)
    canary = registry.get_prompt(name, label="canary")
    for i in range(2_500):
        p = prod if i % 5 else canary
        registry.log_run(
            p, input={"who": str(i)}, output=f"out {i}", latency_ms=i / 10, model="m", tags=["t"]
        )
    assert registry.flush(30)
    runs = runs_of(server, name)
    assert sorted(int(r["input"]["who"]) for r in runs) == list(range(2_500))
    by_label = {(r["label"], r["version"]) for r in runs}
    assert by_label == {("production", 1), ("canary", 2)}
    assert sum(r["label"] == "canary" for r in runs) == 500
    m = registry.metrics()
    assert (m.runs_logged, m.runs_sent, m.runs_dropped, m.runs_failed) == (2_500, 2_500, 0, 0)


def test_an_invalid_run_is_dropped_and_the_rest_of_its_batch_is_sent(
    server: Server, registry: Registry, name: str
) -> None:
    server.prompt_with_versions(name, 1)
    prompt = registry.get_prompt(name)
    registry.log_run(prompt, input={"who": "a"})
    registry.log_run(prompt, input={"who": "b"}, status="maybe")
    registry.log_run(prompt, input={"who": "c"})
    assert registry.flush(10)
    assert sorted(r["input"]["who"] for r in runs_of(server, name)) == ["a", "c"]
    assert registry.metrics().runs_rejected == 1


def test_a_full_buffer_drops_the_oldest_runs_and_counts_them(server: Server, name: str) -> None:
    server.prompt_with_versions(name, 1)
    with Registry(
        server.url, server.key, push=False, run_buffer=10, run_flush_interval=60, run_batch_size=1000
    ) as r:
        prompt = r.get_prompt(name)
        for i in range(25):
            r.log_run(prompt, input={"who": str(i)})
        assert r.metrics().runs_dropped == 15
        assert r.flush(10)
    assert sorted(int(x["input"]["who"]) for x in runs_of(server, name)) == list(range(15, 25))


def test_the_context_manager_and_the_decorator_time_and_log_calls(
    server: Server, registry: Registry, name: str
) -> None:
    server.prompt_with_versions(name, 1)
    prompt = registry.get_prompt(name)
    with registry.trace(prompt, input={"who": "ctx"}) as run:
        run.output = "hello"
        run.prompt_tokens = 3

    @registry.trace(name, model="m-1")
    def answer(question: str) -> str:
        return question.upper()

    @registry.trace(name)
    def fails() -> None:
        raise RuntimeError("model timed out")

    assert answer("hi") == "HI"
    with pytest.raises(RuntimeError):
        fails()
    assert registry.flush(10)
    # One batch: created_at may tie; started_at is each call's own clock.
    # Compared as instants: RFC 3339 text drops trailing zeros of the
    # fraction, so `.12345Z` sorts after `.123456Z` as text.
    runs = sorted(runs_of(server, name), key=lambda r: dt.datetime.fromisoformat(r["started_at"]))
    assert [(r["status"], r["output"], r["version"], r["label"]) for r in runs] == [
        ("success", "hello", 1, "production"),
        ("success", "HI", 1, "production"),
        ("error", None, 1, "production"),
    ]
    assert runs[0]["prompt_tokens"] == 3
    assert runs[1]["model"] == "m-1"
    assert runs[2]["error"] == "RuntimeError: model timed out"
    assert all(r["latency_ms"] >= 0 for r in runs)


def test_the_current_span_gets_the_prompt_name_version_and_label(
    server: Server, registry: Registry, name: str
) -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    server.prompt_with_versions(name, 1, labels=("staging",))
    prompt = registry.get_prompt(name, label="staging")
    with tracer.start_as_current_span("llm-call"), registry.trace(prompt):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes == {
        "prompt_registry.prompt.name": name,
        "prompt_registry.prompt.version": 1,
        "prompt_registry.prompt.label": "staging",
    }
    assert trace.get_current_span() is trace.INVALID_SPAN
