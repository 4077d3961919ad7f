"""The client's figures against the real server, as a Markdown table.

    PROMPT_REGISTRY_BIN=…/prompt-registry .venv/bin/python scripts/bench.py [--smoke]

Starts the server binary (the release build unless PROMPT_REGISTRY_BIN says otherwise) on a free port with a fresh SQLite database, then
measures: a cached ``get_prompt`` (plain and split label), the
application's own time for 100,000 ``log_run`` calls, and the time from a
label move on the server to the client serving the new version (with push).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prompt_registry import Registry

BIN = os.environ.get(
    "PROMPT_REGISTRY_BIN", str(Path(__file__).resolve().parents[3] / "target/release/prompt-registry")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workdir: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port, key = free_port(), "bench-" + secrets.token_hex(24)
    env = {
        **os.environ,
        "APP__SERVER__PORT": str(port),
        "APP__DATABASE__URL": f"sqlite://{workdir}/db.sqlite",
        "APP__AUTH__ADMIN_KEY": key,
        "APP__LOG__LEVEL": "warn",
    }
    process = subprocess.Popen([BIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url, key
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    sys.exit("the server did not become ready")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_cached(registry: Registry, name: str, n: int, subject: str | None = None) -> tuple[float, float]:
    get = registry.get_prompt
    clock = time.perf_counter_ns
    for _ in range(1000):
        get(name, subject=subject)
    samples: list[float] = []
    append = samples.append
    for _ in range(n):
        t0 = clock()
        get(name, subject=subject)
        append((clock() - t0) / 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def bench_log_run(registry: Registry, name: str, n: int) -> tuple[float, float]:
    prompt = registry.get_prompt(name)
    log_run = registry.log_run
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        log_run(prompt, input={"who": "bench"}, output="ok", latency_ms=12.5, model="m", prompt_tokens=i)
    return time.perf_counter() - wall0, time.thread_time() - cpu0


def bench_promotion(registry: Registry, admin: httpx.Client, name: str, n: int) -> list[float]:
    path = f"/v1/prompts/{name.replace('/', '%2F')}/labels/production"
    timings = []
    for i in range(n):
        target = 2 if i % 2 == 0 else 1
        t0 = time.perf_counter()
        response = admin.put(path, json={"version": target, "allow_breaking": True})
        response.raise_for_status()
        while registry.get_prompt(name).version != target:
            if time.perf_counter() - t0 > 10:
                sys.exit(f"move {i}: not served within 10 s")
        timings.append((time.perf_counter() - t0) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="few iterations: checks the script works")
    args = parser.parse_args()
    samples, runs, moves = (2_000, 2_000, 5) if args.smoke else (200_000, 100_000, 200)
    with tempfile.TemporaryDirectory() as workdir:
        process, url, key = start_server(workdir)
        try:
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            name = "bench/prompt"
            admin.post("/v1/prompts", json={"name": name}).raise_for_status()
            for i in (1, 2):
                body = {"template": f"v{i} {{{{who}}}}", "variables": {"who": {}}, "activate": i == 1}
                admin.post(f"/v1/prompts/{name.replace('/', '%2F')}/versions", json=body).raise_for_status()
            split = {"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}
            admin.put(f"/v1/prompts/{name.replace('/', '%2F')}/labels/rollout", json=split).raise_for_status()

            registry = Registry(url, key, run_buffer=200_000, run_flush_interval=60)
            if not registry.wait_for_push(10):
                sys.exit("the event stream did not connect")
            plain = bench_cached(registry, name, samples)
            registry.get_prompt(name, label="rollout", subject="user-1")
            split_hit = bench_cached_label(registry, name, samples)
            wall, cpu = bench_log_run(registry, name, runs)
            flush0 = time.perf_counter()
            flushed = registry.flush(120)
            flush_s = time.perf_counter() - flush0
            promotion = bench_promotion(registry, admin, name, moves)
            metrics = registry.metrics()
            registry.close()
        finally:
            process.terminate()
            process.wait(30)

    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; server: {BIN} (SQLite)"
    )
    print()
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    print(
        f"| cached `get_prompt`, median / p99 ({samples:,} calls) | {plain[0]:.2f} µs / {plain[1]:.2f} µs | ≤ 5 µs / ≤ 50 µs |"
    )
    print(
        f"| cached `get_prompt` of a split label with a subject, median / p99 | {split_hit[0]:.2f} µs / {split_hit[1]:.2f} µs | |"
    )
    print(
        f"| {runs:,} `log_run` calls: the application's wall time / its thread's CPU time | {wall:.3f} s / {cpu:.3f} s | ≤ 1 s |"
    )
    print(
        f"| sending them in the background (`flush`) | {flush_s:.2f} s, {metrics.runs_sent:,} sent, {metrics.runs_dropped} dropped{'' if flushed else ', NOT drained'} | |"
    )
    print(
        f"| label move → client serving it, with push, median / p99 / max ({moves} moves) "
        f"| {statistics.median(promotion):.1f} ms / {percentile(promotion, 0.99):.1f} ms / {max(promotion):.1f} ms | p99 ≤ 1 s |"
    )


def bench_cached_label(registry: Registry, name: str, n: int) -> tuple[float, float]:
    get = registry.get_prompt
    clock = time.perf_counter_ns
    subjects = [f"user-{i % 500}" for i in range(n)]
    for s in subjects[:1000]:
        get(name, label="rollout", subject=s)
    samples: list[float] = []
    append = samples.append
    for s in subjects:
        t0 = clock()
        get(name, label="rollout", subject=s)
        append((clock() - t0) / 1000)
    return statistics.median(samples), percentile(samples, 0.99)


if __name__ == "__main__":
    main()
