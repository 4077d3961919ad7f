"""Traces from real OpenAI instrumentations become runs, field for field.

`otel_app.py` calls a fake OpenAI server through the official `openai`
client, traced by OpenLLMetry or OpenInference and exported by the
OpenTelemetry SDK's OTLP/HTTP exporter to the release binary's
`/v1/traces`. Each call's run is compared with what the app itself saw:
model, token counts, latency, status, the user's message and the answer
(or the error). The share of fields that came through is printed per
instrumentation (run with `-s` to see the table) and must stay high.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import Server
from fake_openai import FakeOpenAI
from registry import create_prompt, create_version, move_label

HERE = pathlib.Path(__file__).resolve().parent
INSTRUMENTATIONS = ("openllmetry", "openinference")
FIELDS = ("model", "prompt_tokens", "completion_tokens", "latency", "status", "input", "output")
# The span lies inside the app's timing of the call; the two clocks differ
# (wall clock against a monotonic one), hence a little slack.
LATENCY_SLACK_MS = 5.0
MIN_SHARE = 0.95
APP_TIMEOUT_S = 120.0
RUNS_TIMEOUT_S = 30.0
# Both instrumentations record message content by default; said anyway, so
# the test does not depend on the environment it runs in.
CONTENT_ON = {
    "TRACELOOP_TRACE_CONTENT": "true",
    "OPENINFERENCE_HIDE_INPUTS": "false",
    "OPENINFERENCE_HIDE_OUTPUTS": "false",
    "OPENINFERENCE_HIDE_INPUT_MESSAGES": "false",
    "OPENINFERENCE_HIDE_OUTPUT_MESSAGES": "false",
}


@dataclass
class Check:
    instrumentation: str
    call: str
    field: str
    ok: bool
    expected: Any
    actual: Any


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.close()


def write_key(server: Server) -> str:
    """A key with the `write` scope, as an application would be given."""
    res = httpx.post(
        f"{server.base_url}/v1/api-keys",
        json={"name": "otel-app", "scopes": ["write"]},
        headers=server.headers(),
        timeout=10,
    )
    assert res.status_code == 201, res.text
    return res.json()["secret"]


def run_app(
    instrumentation: str, server: Server, key: str, fake: FakeOpenAI, prompt: str, out: pathlib.Path
) -> list[dict]:
    """Runs otel_app.py in its own process; the calls it made, as it saw them."""
    args = [instrumentation, server.base_url, key, fake.url, prompt, str(out)]
    done = subprocess.run(
        [sys.executable, str(HERE / "otel_app.py"), *args],
        env={**os.environ, **CONTENT_ON},
        check=False,
        capture_output=True,
        text=True,
        timeout=APP_TIMEOUT_S,
    )
    assert done.returncode == 0, f"otel_app.py {instrumentation} exited {done.returncode}:\n{done.stderr}"
    return json.loads(out.read_text())


def started(run: dict) -> datetime.datetime:
    # Microseconds are plenty to order calls made one after another.
    text = re.sub(r"\.(\d+)", lambda m: "." + m[1][:6].ljust(6, "0"), run["started_at"])
    return datetime.datetime.fromisoformat(text)


def wait_for_runs(server: Server, prompt: str, count: int) -> list[dict]:
    """The prompt's runs, oldest call first, once `count` are stored (the writer is asynchronous)."""

    def page() -> list[dict]:
        res = httpx.get(
            f"{server.base_url}/v1/runs",
            params={"prompt": prompt, "limit": 100},
            headers=server.headers(),
            timeout=10,
        )
        assert res.status_code == 200, res.text
        return res.json()["items"]

    deadline = time.monotonic() + RUNS_TIMEOUT_S
    runs = page()
    while len(runs) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        runs = page()
    time.sleep(0.5)  # a duplicate would have arrived by now
    runs = page()
    assert len(runs) == count, f"{len(runs)} runs for {count} calls:\n{server.log_tail()}"
    return sorted(runs, key=started)


def compare(instrumentation: str, call: dict, run: dict, delay_ms: float) -> list[Check]:
    """Each field of `run` against the call the app made."""

    def check(field: str, ok: bool, expected: Any, actual: Any) -> Check:
        return Check(instrumentation, call["user"], field, ok, expected, actual)

    def same(field: str) -> Check:
        return check(field, run[field] == call[field], call[field], run[field])

    latency = run["latency_ms"]
    most = call["wall_ms"] + LATENCY_SLACK_MS
    contents = [m.get("content") for m in run["input"].get("messages", [])]
    if call["status"] == "success":
        output = same("output")
    else:
        output = check("output", bool(run["error"]), "an error message", run["error"])
    return [
        same("model"),
        same("prompt_tokens"),
        same("completion_tokens"),
        check("latency", delay_ms <= latency <= most, f"{delay_ms:.0f}–{most:.1f} ms", latency),
        same("status"),
        check("input", call["user"] in contents, f"a message {call['user']!r}", run["input"]),
        output,
    ]


def table(checks: list[Check]) -> str:
    """Field by instrumentation, correct/total, then the mismatches with what came instead."""
    columns = (*INSTRUMENTATIONS, "overall")

    def score(field: str | None, column: str) -> str:
        picked = [c for c in checks if (field is None or c.field == field) and column in ("overall", c.instrumentation)]
        ok = sum(c.ok for c in picked)
        return f"{ok}/{len(picked)}" if field else f"{ok}/{len(picked)} ({ok / len(picked):.1%})"

    lines = [f"{'field':<18}" + "".join(f"{c:>17}" for c in columns)]
    for field in FIELDS:
        lines.append(f"{field:<18}" + "".join(f"{score(field, c):>17}" for c in columns))
    lines.append(f"{'all':<18}" + "".join(f"{score(None, c):>17}" for c in columns))
    misses = [c for c in checks if not c.ok]
    lines.append(f"mismatches: {len(misses)}")
    for c in misses:
        lines.append(f"  {c.instrumentation} / {c.call!r} / {c.field}: expected {c.expected!r}, got {c.actual!r}")
    return "\n".join(lines)


def test_openai_calls_traced_by_openllmetry_and_openinference_become_matching_runs(
    server: Server, fake_openai: FakeOpenAI, tmp_path: pathlib.Path
) -> None:
    key = write_key(server)
    checks: list[Check] = []
    for instrumentation in INSTRUMENTATIONS:
        prompt = f"otel/{instrumentation}"
        create_prompt(server, prompt)
        create_version(server, prompt, {"template": "You answer in one short sentence.", "activate": False})
        move_label(server, prompt, "production", 1)
        calls = run_app(instrumentation, server, key, fake_openai, prompt, tmp_path / f"{instrumentation}.json")
        runs = wait_for_runs(server, prompt, len(calls))
        for call, run in zip(calls, runs, strict=True):
            assert re.fullmatch(r"[0-9a-f]{32}", run["trace_id"] or ""), run["trace_id"]
            assert re.fullmatch(r"[0-9a-f]{16}", run["span_id"] or ""), run["span_id"]
            assert (run["version"], run["label"]) == (1, "production"), "the version the label pointed to"
            checks += compare(instrumentation, call, run, fake_openai.delay_s * 1000)
        assert len({r["span_id"] for r in runs}) == len(runs), "one run per span"
    report = table(checks)
    print(f"\nOTLP runs from real instrumentations, fields that came through:\n{report}")
    share = sum(c.ok for c in checks) / len(checks)
    assert share >= MIN_SHARE, f"{share:.1%} of the fields came through:\n{report}"
