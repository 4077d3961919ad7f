#!/usr/bin/env python3
"""Console benchmark: the server time of every main page of the web console
on a PostgreSQL database holding 1,000 prompts (in 20 folders), 10,000
versions and 1,000,000 runs over 30 days, a tenth of them on one prompt
whose pages are the ones measured (and, for the runs pages, a typical
prompt's too, with about 1,000); and the console's assets, compressed.

Each page is requested one at a time over a kept-alive connection from a
signed-in session, after a warm-up; the time is taken at the client on
loopback, so it bounds the server's time from above. Prints a Markdown
table and the targets: p99 ≤ 50 ms per page, assets ≤ 150 KB compressed.

Usage: scripts/bench_console.py [--smoke] [--requests 200] [--no-build]
Needs: psql and PostgreSQL (PG_ADMIN_URL).
"""
import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from benchlib import KEY, ROOT, SERVER, prepare, psql, run, scratch_database

PORT = int(os.environ.get("BENCH_PORT", "18560"))
BASE = f"http://127.0.0.1:{PORT}"
HOT = "a-hot/support-chat"
TYPICAL = "team-05/prompt-0105"


def seed(url, runs):
    """Prompts, versions, labels and runs, written straight into the schema."""
    psql(url, f"""
INSERT INTO prompts (id, name, description, tags, created_at, updated_at, latest_version)
SELECT gen_random_uuid(),
       CASE WHEN g = 1 THEN '{HOT}' ELSE 'team-' || lpad((g % 20)::text, 2, '0') || '/prompt-' || lpad(g::text, 4, '0') END,
       'A prompt of the benchmark', '["bench"]', now() - make_interval(mins => g), now() - make_interval(mins => g), 10
FROM generate_series(1, 1000) g;
INSERT INTO prompt_versions (id, prompt_id, version, kind, template, variables, config, commit_message, created_at)
SELECT gen_random_uuid(), p.id, v, 'text',
       to_jsonb('You are a support agent for {{{{company}}}}.' || E'\\n' || repeat('Answer politely and briefly. ', v) || E'\\nQuestion: {{{{question}}}}'),
       '{{"company": {{"type": "string"}}, "question": {{"type": "string"}}}}',
       jsonb_build_object('model', 'gpt-4o', 'temperature', v / 10.0), 'version ' || v, now() - make_interval(hours => 11 - v)
FROM prompts p CROSS JOIN generate_series(1, 10) v;
INSERT INTO prompt_labels (prompt_id, name, version, protected, revision, updated_at)
SELECT id, 'production', 9, TRUE, 1, now() FROM prompts;
INSERT INTO prompt_labels (prompt_id, name, version, protected, revision, updated_at)
SELECT id, 'staging', 10, FALSE, 1, now() FROM prompts;
""")
    # The months the 30 days reach into, as the server keeps them ahead.
    psql(url, """
DO $$
DECLARE m timestamptz;
BEGIN
  FOR m IN SELECT generate_series(date_trunc('month', now() - interval '31 days', 'UTC'), date_trunc('month', now(), 'UTC'), interval '1 month') LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF prompt_runs FOR VALUES FROM (%L) TO (%L)',
      'prompt_runs_p' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM'),
      (lpad(to_hex((extract(epoch FROM m) * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid,
      (lpad(to_hex((extract(epoch FROM m + interval '1 month') * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid);
  END LOOP;
END
$$;
""")
    # A tenth of the runs on the hot prompt (its last two versions, under
    # its labels), the rest spread over every other version.
    psql(url, f"""
INSERT INTO prompt_runs (id, prompt_id, version_id, version, input, output, status, error, model, latency_us,
                         prompt_tokens, completion_tokens, cost_nanos, metadata, tags, started_at, created_at, label)
SELECT (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') || '7' || substr(md5(g::text), 1, 3)
        || '8' || substr(md5(g::text), 4, 15))::uuid,
       v.prompt_id, v.id, v.version, '{{"company": "Acme", "question": "Where is my order?"}}', '"It ships today."',
       CASE WHEN g % 13 = 0 THEN 'error' ELSE 'success' END, CASE WHEN g % 13 = 0 THEN 'rate limited' END,
       'gpt-4o', (200 + (g * 7919) % 3000)::bigint * 1000, (g % 500)::int, (g % 300)::int,
       (g * 104729) % 5000000, '{{}}', '[]', t.at, t.at,
       CASE WHEN v.version = 9 THEN 'production' WHEN v.version = 10 THEN 'staging' END
FROM generate_series(1::bigint, {runs}) g
CROSS JOIN LATERAL (SELECT now() - make_interval(secs => g * 2592000.0 / {runs}) AS at) t
JOIN (SELECT row_number() OVER (ORDER BY p.name = '{HOT}' DESC, v.version DESC, v.id) - 1 AS i, v.id, v.prompt_id, v.version
      FROM prompt_versions v JOIN prompts p ON p.id = v.prompt_id) v
  ON v.i = CASE WHEN g % 10 = 0 THEN (g / 10) % 2 ELSE 10 + g % 9990 END;
""")
    psql(url, "VACUUM ANALYZE")


def start(env):
    proc = subprocess.Popen([SERVER], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            with urllib.request.urlopen(BASE + "/ready", timeout=1) as res:
                if res.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("the server did not become ready")


def sign_in(conn):
    body = urllib.parse.urlencode({"key": KEY})
    conn.request("POST", "/ui/sign-in", body, {"Content-Type": "application/x-www-form-urlencoded"})
    res = conn.getresponse()
    res.read()
    cookie = res.getheader("Set-Cookie") or ""
    if res.status != 303 or not cookie.startswith("pr_session="):
        sys.exit(f"sign-in: {res.status}")
    return cookie.split(";")[0]


def timed(conn, path, cookie, n, warmup):
    took = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        res = conn.getresponse()
        body = res.read()
        if i >= warmup:
            took.append((time.perf_counter() - t0) * 1000)
        if res.status != 200:
            sys.exit(f"GET {path}: {res.status} {body[:300]!r}")
    took.sort()
    return {"p50": statistics.median(took), "p99": took[min(len(took) - 1, int(len(took) * 0.99))],
            "max": took[-1], "bytes": len(body)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="10,000 runs and 20 requests a page")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    prepare(args.no_build)
    runs = 10_000 if args.smoke else 1_000_000
    n = 20 if args.smoke else args.requests
    with scratch_database("bench_console") as (url, _tmp):
        env = dict(os.environ, APP_ENV="dev", APP__DATABASE__URL=url, APP__AUTH__ADMIN_KEY=KEY,
                   APP__SERVER__PORT=str(PORT), APP__CACHE__MODE="memory", APP__LOG__LEVEL="warn")
        run(SERVER, "migrate", "up", env=env)
        t0 = time.monotonic()
        seed(url, runs)
        print(f"seeded 1,000 prompts, 10,000 versions, {runs:,} runs in {time.monotonic() - t0:.0f} s", flush=True)
        counts = psql(url, "SELECT (SELECT count(*) FROM prompts) || ' ' || (SELECT count(*) FROM prompt_versions)"
                           " || ' ' || (SELECT count(*) FROM prompt_runs) || ' ' || (SELECT count(*) FROM prompt_runs r"
                           f" JOIN prompts p ON p.id = r.prompt_id WHERE p.name = '{HOT}') || ' ' || (SELECT count(*)"
                           f" FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE p.name = '{TYPICAL}')")
        print(f"rows (prompts, versions, runs, runs of {HOT}, runs of {TYPICAL}): {counts}")
        proc = start(env)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            cookie = sign_in(conn)
            run_id = psql(url, f"SELECT r.id FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id"
                               f" WHERE p.name = '{HOT}' ORDER BY r.created_at DESC LIMIT 1")
            hot = "/ui/prompts/" + urllib.parse.quote(HOT, safe="")
            typical = "/ui/prompts/" + urllib.parse.quote(TYPICAL, safe="")
            pages = [
                ("sign-in form", "/ui/sign-in"),
                ("prompts, first page", "/ui/prompts"),
                ("prompts, search by prefix", "/ui/prompts?q=team-07%2F"),
                ("prompt (10 versions, 2 labels)", hot),
                ("diff v9 → v10, side by side", f"{hot}/diff?from=9&to=10"),
                ("diff v1 → v10, unified", f"{hot}/diff?from=1&to=10&view=unified"),
                ("promote confirmation", f"{hot}/labels/production/promote?to=10"),
                ("runs, 24 h, by version", f"{hot}/runs?range=24h"),
                ("runs, 7 days, by version", f"{hot}/runs?range=7d"),
                ("runs, 7 days, by label", f"{hot}/runs?range=7d&by=label"),
                ("runs, 30 days, by version", f"{hot}/runs?range=30d"),
                ("runs, filtered (errors of v10)", f"{hot}/runs?range=24h&version=10&status=error"),
                ("typical prompt: runs, 7 days", f"{typical}/runs?range=7d"),
                ("typical prompt: runs, 30 days", f"{typical}/runs?range=30d"),
                ("run detail", f"/ui/runs/{run_id}"),
                ("keys", "/ui/keys"),
                ("audit log", "/ui/audit"),
            ]
            rows = []
            for title, path in pages:
                rows.append((title, timed(conn, path, cookie, n, warmup=3)))
            page = conn
            page.request("GET", hot, headers={"Cookie": cookie})
            html = page.getresponse().read().decode()
            runs_page = conn
            runs_page.request("GET", f"{hot}/runs", headers={"Cookie": cookie})
            html += runs_page.getresponse().read().decode()
            assets = sorted(set(re.findall(r'"(/ui/assets/[0-9a-f]+/[^"]+)"', html)))
            sizes = []
            for asset in assets:
                conn.request("GET", asset, headers={"Accept-Encoding": "gzip"})
                res = conn.getresponse()
                sizes.append((asset.rsplit("/", 1)[1], len(res.read()), res.getheader("Content-Encoding")))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{n} requests a page, one at a time, after 3 warm-up requests:\n")
    print("| page | p50 ms | p99 ms | max ms | KB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for title, r in rows:
        print(f"| {title} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['bytes'] / 1024:.1f} |")
    print("\n| asset | bytes (gzip) |")
    print("| --- | ---: |")
    for name, size, encoding in sizes:
        print(f"| {name} | {size:,}{'' if encoding == 'gzip' else ' (not compressed)'} |")
    total = sum(size for _, size, _ in sizes)
    print(f"| **total** | **{total:,}** |")
    worst = max(rows, key=lambda r: r[1]["p99"])
    over = [title for title, r in rows if r["p99"] > 50]
    print(f"\ntarget: every page p99 ≤ 50 ms: {'met' if not over else 'MISSED'}"
          f" (slowest: {worst[0]}, {worst[1]['p99']:.1f} ms{'; over: ' + ', '.join(over) if over else ''})")
    print(f"target: assets ≤ 150 KB compressed: {'met' if total <= 150 * 1024 else 'MISSED'} ({total / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
