#!/usr/bin/env python3
"""Ingestion benchmark: runs/s through single sync POSTs, single async POSTs
(`Prefer: respond-async`), batch POSTs and OTLP trace exports (protobuf,
512 spans per request) against the release server on PostgreSQL, with a raw
PostgreSQL COPY of the same rows, in the same run, as the ceiling. Then fetch
isolation: the cached active-version fetch at 64 connections, idle and while
runs are ingested. Prints Markdown tables with the ratios.

Usage: scripts/bench_ingest.py [--smoke] [--duration 10] [--concurrency 50]
       [--batch-concurrency 4] [--batch-size 1000] [--copy-rows 200000]
       [--otlp-batch 512] [--otlp-concurrency 4]
Needs: wrk, psql, a PostgreSQL server (PG_ADMIN_URL, default
postgres://postgres@127.0.0.1:5432/test).
"""
import argparse
import csv
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
import uuid

from benchlib import (
    KEY,
    ROOT,
    SERVER,
    prepare,
    psql,
    run,
    scratch_database,
    wrk,
    wrk_args,
    wrk_figures,
)

PORT = int(os.environ.get("BENCH_PORT", "18400"))
BASE = f"http://127.0.0.1:{PORT}"

RUN = {
    "prompt": "bench",
    "version": 1,
    "status": "success",
    "model": "gpt-4o-mini",
    "latency_ms": 412,
    "input": {"question": "How do I reset my password?", "locale": "en"},
    "output": "Open Settings, then Security, then Reset password.",
    "prompt_tokens": 118,
    "completion_tokens": 24,
    "cost_usd": "0.000123",
    "metadata": {"user": "u-42", "region": "eu"},
    "tags": ["bench"],
}


def http(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return res.status, json.loads(res.read() or b"null")


def lua(path, body, extra_headers=None, delay_ms=None):
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (extra_headers or {}).items())
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
        f.write(headers)
        f.write(f"wrk.body = [==[{json.dumps(body)}]==]\n")
        if delay_ms:
            # Each connection waits between requests: a steady rate per client.
            f.write(f"delay = function() return {delay_ms} end\n")


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, payload):
    """A length-delimited protobuf field (strings, bytes, messages)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def attribute(key, value):
    """A KeyValue whose AnyValue is a string or an int."""
    any_value = field(1, value) if isinstance(value, str) else varint(3 << 3) + varint(value)
    return field(1, key) + field(2, any_value)


# The protobuf wire format written out for the benchmark's payload only: the
# server reads it with the published OTLP types, which check it.
TRACE_MARK = bytes(range(0xA0, 0xB0))


def otlp_export(spans):
    """An ExportTraceServiceRequest of LLM spans for prompt `bench`, every
    span in the trace TRACE_MARK (replaced per request by the Lua script)."""
    start = time.time_ns()
    body = b""
    for i in range(spans):
        span = (field(1, TRACE_MARK) + field(2, struct.pack(">Q", i + 1)) + field(5, "chat gpt-4o-mini")
                + varint(6 << 3) + varint(3)
                + varint(7 << 3 | 1) + struct.pack("<Q", start) + varint(8 << 3 | 1) + struct.pack("<Q", start + 412_000_000)
                + field(9, attribute("gen_ai.operation.name", "chat"))
                + field(9, attribute("prompt_registry.prompt.name", "bench"))
                + field(9, attribute("gen_ai.request.model", "gpt-4o-mini"))
                + field(9, attribute("gen_ai.usage.input_tokens", 118))
                + field(9, attribute("gen_ai.usage.output_tokens", 24))
                + field(9, attribute("gen_ai.prompt.0.role", "user"))
                + field(9, attribute("gen_ai.prompt.0.content", "How do I reset my password?"))
                + field(9, attribute("gen_ai.completion.0.role", "assistant"))
                + field(9, attribute("gen_ai.completion.0.content", RUN["output"])))
        body += field(2, span)
    scope = field(2, body)
    resource = field(1, field(1, attribute("service.name", "bench")))
    return field(1, resource + scope)


def otlp_lua(path, body):
    """Posts `body` with a fresh random trace id per request, so every span
    is a new run (a repeated one would be stored once)."""
    parts = body.split(TRACE_MARK)
    lit = lambda b: '"' + "".join(f"\\{c:03d}" for c in b) + '"'
    with open(path, "w") as f:
        f.write(f'local parts = {{{", ".join(lit(p) for p in parts)}}}\n')
        f.write('local headers = {["Content-Type"] = "application/x-protobuf", '
                f'["Authorization"] = "Bearer {KEY}"}}\n')
        f.write("local threads = 0\nsetup = function(thread) threads = threads + 1; thread:set('seed', threads) end\n")
        f.write("init = function() math.randomseed(os.time() * 1000 + seed) end\n")
        f.write("request = function()\n  local b = {}\n  for i = 1, 16 do b[i] = string.char(math.random(0, 255)) end\n"
                '  return wrk.format("POST", "/v1/traces", headers, table.concat(parts, table.concat(b)))\nend\n')


def count(url):
    return int(psql(url, "SELECT count(*) FROM prompt_runs"))


def post(script, path, connections, duration):
    return wrk(script, BASE + path, connections, duration, "--timeout", "10s")


def wait_until_stored(url, before, accepted, start, duration):
    """Waits until every accepted run is stored, or two minutes past the run."""
    while count(url) - before < accepted and time.monotonic() - start < duration + 120:
        time.sleep(0.05)


def measure_isolation(args, tmp):
    """The cached fetch's figures idle, then while batches are posted."""
    fetch = os.path.join(tmp, "fetch.lua")
    with open(fetch, "w") as f:
        f.write(f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
                'request = function() return wrk.format("GET", "/v1/prompts/bench/versions/active") end\n')
    batch = os.path.join(tmp, "isolation.lua")
    lua(batch, {"runs": [RUN] * args.isolation_batch})
    wrk(fetch, BASE, args.fetch_connections, 2)
    idle = wrk(fetch, BASE, args.fetch_connections, args.duration)
    # The ingestion starts first and ends last, so it covers the whole fetch.
    ingest_s = args.duration + 2
    started = time.monotonic()
    ingesting = subprocess.Popen(wrk_args(batch, BASE + "/v1/runs/batch", args.batch_concurrency, ingest_s,
                                          "--timeout", "10s"), stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    loaded = wrk(fetch, BASE, args.fetch_connections, args.duration)
    out, _ = ingesting.communicate()
    ingest = wrk_figures(out)
    ingest["seconds"] = max(time.monotonic() - started, ingest_s)
    return idle, loaded, ingest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="a couple of seconds per case, to keep the script working")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--batch-concurrency", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--copy-rows", type=int, default=200_000)
    ap.add_argument("--otlp-batch", type=int, default=512, help="spans per OTLP export request")
    ap.add_argument("--otlp-concurrency", type=int, default=4)
    ap.add_argument("--fetch-connections", type=int, default=64)
    ap.add_argument("--isolation-batch", type=int, default=200, help="runs per batch POST while fetching")
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.copy_rows = 2, 20_000
    prepare(args.no_build)
    with scratch_database("bench_ingest") as (url, tmp):
        measure(args, url, tmp)


def measure(args, url, tmp):
    server = None
    try:
        env = dict(os.environ, APP__DATABASE__URL=url, APP__SERVER__PORT=str(PORT), APP__DATABASE__MIGRATE="true",
                   APP__LOG__LEVEL="warn", APP__DATABASE__MAX_CONNECTIONS="16", APP_ENV="prod",
                   APP__SERVER__HOST="127.0.0.1", APP__AUTH__ADMIN_KEY=KEY)
        env.pop("RUST_LOG", None)
        # The child keeps its own copy of the log's descriptor.
        with open(os.path.join(tmp, "server.log"), "w") as log:
            server = subprocess.Popen([SERVER], cwd=ROOT, env=env,
                                      stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(100):
            try:
                if http("GET", "/ready")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        http("POST", "/v1/prompts", {"name": "bench"})
        http("POST", "/v1/prompts/bench/versions", {"template": "Answer: {{question}}", "variables": {"question": {}, "locale": {"required": False}}})

        single, asynchronous, batch = (os.path.join(tmp, n) for n in ("single.lua", "async.lua", "batch.lua"))
        lua(single, RUN)
        lua(asynchronous, RUN, {"Prefer": "respond-async"})
        paced = os.path.join(tmp, "paced.lua")
        lua(paced, RUN, {"Prefer": "respond-async"}, delay_ms=20)
        lua(batch, {"runs": [RUN] * args.batch_size})
        # Warm up connections and caches.
        post(single, "/v1/runs", 4, 1)

        rows = []
        before = count(url)
        r = post(single, "/v1/runs", args.concurrency, args.duration)
        stored = count(url) - before
        rows.append(("sync single POST", args.concurrency, r, (r["total"] - r["bad"]) / args.duration, stored))

        before = count(url)
        start = time.monotonic()
        r = post(asynchronous, "/v1/runs", args.concurrency, args.duration)
        accepted = r["total"] - r["bad"]
        wait_until_stored(url, before, accepted, start, args.duration)
        drained = time.monotonic() - start
        stored = count(url) - before
        r["drain_rows_per_s"] = stored / drained
        rows.append(("async single POST (202s; the rest 503)", args.concurrency, r, accepted / args.duration, stored))

        # The same clients at a steady 50 runs/s each (2,500/s in all), below
        # what the writer sustains: the latency of a 202 without back-pressure.
        before = count(url)
        start = time.monotonic()
        r = post(paced, "/v1/runs", args.concurrency, args.duration)
        accepted = r["total"] - r["bad"]
        wait_until_stored(url, before, accepted, start, args.duration)
        stored = count(url) - before
        rows.append(("async single POST, 50 runs/s per client", args.concurrency, r, accepted / args.duration, stored))

        before = count(url)
        r = post(batch, "/v1/runs/batch", args.batch_concurrency, args.duration)
        stored = count(url) - before
        rows.append((f"batch POST ({args.batch_size} runs)", args.batch_concurrency, r,
                     (r["total"] - r["bad"]) * args.batch_size / args.duration, stored))

        otlp = os.path.join(tmp, "otlp.lua")
        otlp_lua(otlp, otlp_export(args.otlp_batch))
        before = count(url)
        start = time.monotonic()
        r = post(otlp, "/v1/traces", args.otlp_concurrency, args.duration)
        accepted = (r["total"] - r["bad"]) * args.otlp_batch
        wait_until_stored(url, before, accepted, start, args.duration)
        r["drain_rows_per_s"] = (count(url) - before) / (time.monotonic() - start)
        rows.append((f"OTLP protobuf export ({args.otlp_batch} LLM spans; the rest 503)", args.otlp_concurrency, r,
                     accepted / args.duration, count(url) - before))

        isolation = measure_isolation(args, tmp)

        # The ceiling: COPY of the same rows straight into the same table.
        csv_path = os.path.join(tmp, "runs.csv")
        prompt_id, version_id = psql(url, "SELECT prompt_id || ',' || id FROM prompt_versions LIMIT 1").split(",")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(csv_path, "w", newline="") as f:
            out = csv.writer(f)
            for _ in range(args.copy_rows):
                out.writerow([uuid.uuid4(), prompt_id, version_id, 1, json.dumps(RUN["input"]), json.dumps(RUN["output"]),
                              "success", None, RUN["model"], 412_000, 118, 24, 123000, json.dumps(RUN["metadata"]),
                              json.dumps(RUN["tags"]), None, stamp])
        cols = ("id,prompt_id,version_id,version,input,output,status,error,model,latency_us,prompt_tokens,"
                "completion_tokens,cost_nanos,metadata,tags,started_at,created_at")
        start = time.monotonic()
        run("psql", url, "-qc", f"\\copy prompt_runs({cols}) FROM '{csv_path}' WITH (FORMAT csv)")
        copy_s = time.monotonic() - start
        copy_rps = args.copy_rows / copy_s

        print(f"\nIngestion on PostgreSQL, {args.duration} s per case, wrk -t2; COPY of {args.copy_rows} rows as the ceiling\n")
        print("| path | connections | requests/s | runs/s | p50 ms | p99 ms | runs stored | non-2xx | runs/s ÷ COPY |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, conns, r, runs_s, stored in rows:
            print(f"| {name} | {conns} | {r['rps']:.0f} | {runs_s:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {stored} | {r['bad']} | {runs_s / copy_rps:.0%} |")
            if "drain_rows_per_s" in r:
                d = r["drain_rows_per_s"]
                print(f"| async, accepted → stored | {conns} | | {d:.0f} | | | {stored} | | {d / copy_rps:.0%} |")
        print(f"| COPY (psql \\copy, CSV) | 1 | | {copy_rps:.0f} | | | {args.copy_rows} | | 100% |")
        idle, loaded, ingest = isolation
        print(f"\nFetch isolation: the cached active-version fetch at {args.fetch_connections} connections, idle and while "
              f"{args.batch_concurrency} connections post {args.isolation_batch}-run batches as fast as they are stored\n")
        print("| fetch | requests/s | p50 ms | p99 ms | runs/s stored meanwhile | p99 ÷ idle p99 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        print(f"| idle | {idle['rps']:.0f} | {idle['p50']:.2f} | {idle['p99']:.2f} | 0 | 1.0× |")
        runs_s = (ingest["total"] - ingest["bad"]) * args.isolation_batch / ingest["seconds"]
        print(f"| while ingesting | {loaded['rps']:.0f} | {loaded['p50']:.2f} | {loaded['p99']:.2f} | {runs_s:.0f} | "
              f"{loaded['p99'] / idle['p99']:.1f}× |")
        if any(r["socket_errors"] for _, _, r, _, _ in rows):
            print("\nsocket errors:", "; ".join(r["socket_errors"] for _, _, r, _, _ in rows if r["socket_errors"]))
        per_request = lambda name: args.batch_size if name.startswith("batch") else args.otlp_batch if name.startswith("OTLP") else 1
        lost = [name for name, _, r, _, stored in rows if stored < (r["total"] - r["bad"]) * per_request(name)]
        if lost:
            sys.exit(f"runs lost on: {', '.join(lost)}")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
