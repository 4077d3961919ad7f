#!/usr/bin/env bash
# Instructions per request of the cached fetch and of the bare actix-web
# route, counted by valgrind's callgrind: the same figure for the same build
# whatever else the machine is doing, so a change to the hot path can be
# judged without the noise of a throughput run. User-space instructions only
# (the kernel's share, about half of the CPU, is the same for both), and
# without SHA extensions (valgrind hides them), so the key check costs more
# here than on the hardware.
#
# Usage: scripts/bench_instructions.sh [requests]   (needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p prompt-registry -p bench-bare
TMP=$(mktemp -d)
PORT=${BENCH_PORT:-18700}
KEY="bench-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export APP_ENV=prod APP__SERVER__PORT=$PORT APP__SERVER__HOST=127.0.0.1 APP__LOG__LEVEL=warn \
  APP__AUTH__ADMIN_KEY=$KEY APP__CACHE__MODE=memory APP__SERVER__WORKERS=1 APP__DATABASE__MIGRATE=true \
  APP__DATABASE__URL="sqlite://$TMP/db.sqlite?mode=rwc"
unset DATABASE_URL REDIS_URL RUST_LOG
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$TMP"' EXIT
ACTIVE=/v1/prompts/bench-1/versions/active

wait_for() {
  for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$PORT$1" && return 0; sleep 0.1; done
  echo "no answer on $1" >&2; exit 1
}

requests() {
  python3 - "$PORT" "$KEY" "$1" "$ACTIVE" <<'PY'
import http.client, sys
port, key, n, path = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", path, headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status}")
PY
}

# The same prompt as scripts/bench_fetch.py, made through the API.
target/release/prompt-registry >/dev/null 2>"$TMP/seed.log" & PID=$!
wait_for /ready
post() { curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:$PORT$1" >/dev/null; }
post /v1/prompts '{"name": "bench-1"}'
post /v1/prompts/bench-1/versions '{"kind": "chat", "template": [{"role": "system", "content": "You are a support agent for {{product}}."}, {"role": "user", "content": "{{question}}"}], "variables": {"product": {"type": "string", "default": "Acme"}, "question": {"type": "string"}}, "config": {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 512}}'
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT$ACTIVE" > "$TMP/active.json"
kill $PID; wait $PID 2>/dev/null || true; PID=

# Instructions over N requests after 300 untimed, on one worker thread.
count() {
  local out=$TMP/callgrind.$1
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" "${@:2}" >/dev/null 2>"$TMP/valgrind.log" & PID=$!
  wait_for "$READY"
  requests 300
  callgrind_control -z $PID >/dev/null 2>&1
  requests "$N"
  callgrind_control -d $PID >/dev/null 2>&1
  kill $PID; wait $PID 2>/dev/null || true; PID=
  callgrind_annotate "$out".*.1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}
READY=/ready
cached=$(count cached target/release/prompt-registry)
READY=$ACTIVE
bare=$(count bare target/release/bench-bare "$PORT" "$TMP/active.json")
echo "GET $ACTIVE, $N requests on one keep-alive connection, one worker, counted by callgrind:"
echo
echo "| case | instructions/request |"
echo "| --- | ---: |"
echo "| (b) active version, in-process cache | $((cached / N)) |"
echo "| (g) bare actix-web route, same JSON | $((bare / N)) |"
echo
python3 -c "print(f'(g) / (b): {$bare / $cached:.0%} (the instructions of the bare route as a share of the cached fetch)')"
