#!/usr/bin/env python3
"""Change-stream benchmark: the time from a label move returning to its
event arriving at a connected SSE client, and how many idle stream
connections one server process holds, with its memory.

Latency: one client streams `/v1/events/stream`; the script moves a label
back and forth N times, one move at a time, and for each takes the time
from the PUT's answer to the event's `data:` line (both on this machine's
monotonic clock). Connections: opens C idle streams (raw sockets, no
thread per connection), reads the server's resident memory, moves a label
once and counts how many of the C receive the event.

Usage: scripts/bench_stream.py [--smoke] [--moves 500] [--connections 10000] [--no-build]
Runs the release binary on SQLite (the dispatcher and hub are the same on
PostgreSQL; the figure of interest is the process's own cost).
"""
import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

from benchlib import KEY, ROOT, SERVER, prepare

PORT = int(os.environ.get("BENCH_PORT", "18450"))
BASE = f"http://127.0.0.1:{PORT}"


def call(method, path, body=None):
    req = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.status, res.read()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_stream(query=""):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(
        f"GET /v1/events/stream{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return s


def read_until(sock, marker, buffer=b"", timeout=10.0):
    sock.settimeout(timeout)
    while marker not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("stream closed")
        buffer += chunk
    return buffer


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--moves", type=int, default=500)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.moves, args.connections = 20, 200
    prepare(args.no_build)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    tmp = tempfile.mkdtemp()
    env = {
        **os.environ,
        "APP__SERVER__PORT": str(PORT),
        "APP__DATABASE__URL": f"sqlite://{tmp}/bench.db",
        "APP__AUTH__ADMIN_KEY": KEY,
        "APP__LOG__LEVEL": "warn",
        "APP__CACHE__MODE": "memory",
    }
    server = subprocess.Popen([SERVER], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                call("GET", "/ready")
                break
            except OSError:
                time.sleep(0.1)
        call("POST", "/v1/prompts", {"name": "stream"})
        for v in (1, 2):
            call("POST", "/v1/prompts/stream/versions", {"template": f"v{v}", "activate": False})

        # Latency, one stream.
        s = open_stream("?labels=bench")
        buffer = read_until(s, b"\r\n\r\n")
        latencies = []
        for i in range(args.moves):
            call("PUT", "/v1/prompts/stream/labels/bench", {"version": 1 + i % 2})
            returned = time.monotonic()
            buffer = read_until(s, b"data:", buffer)
            end = buffer.index(b"\n", buffer.index(b"data:"))
            latencies.append((time.monotonic() - returned) * 1000)
            buffer = buffer[end + 1 :]
        s.close()

        # Idle connections.
        base_rss = rss_mb(server.pid)
        sel = selectors.DefaultSelector()
        socks = []
        opened_at = time.monotonic()
        for _ in range(args.connections):
            sock = open_stream("?labels=idle")
            sock.setblocking(False)
            socks.append(sock)
            sel.register(sock, selectors.EVENT_READ, bytearray())
        # Wait until every stream has its headers.
        pending = set(socks)
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(65536)
                key.data.extend(data)
                if b"\r\n\r\n" in key.data:
                    pending.discard(key.fileobj)
        open_s = time.monotonic() - opened_at
        held = args.connections - len(pending)
        time.sleep(1)
        idle_rss = rss_mb(server.pid)
        call("PUT", "/v1/prompts/stream/labels/idle", {"version": 1})
        moved = time.monotonic()
        got = set()
        deadline = time.monotonic() + 60
        while len(got) < held and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                key.data.extend(key.fileobj.recv(65536))
                if b"event: label.moved" in key.data:
                    got.add(key.fileobj)
        fanout_ms = (time.monotonic() - moved) * 1000
        for sock in socks:
            sock.close()

        print("\n| stream figure | value |\n| --- | --- |")
        print(f"| label move returned → event at a connected client, {len(latencies)} moves | "
              f"p50 {statistics.median(latencies):.2f} ms, p99 {pct(latencies, 99):.2f} ms, max {max(latencies):.2f} ms |")
        print(f"| idle streams held by one process | {held} of {args.connections} (opened in {open_s:.1f} s) |")
        print(f"| server memory (RSS) before → with the idle streams | {base_rss:.0f} MB → {idle_rss:.0f} MB "
              f"({(idle_rss - base_rss) * 1024 / max(held, 1):.1f} KB per stream) |")
        print(f"| one label move delivered to all idle streams | {len(got)} of {held} in {fanout_ms:.0f} ms |")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
