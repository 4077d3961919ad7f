#!/usr/bin/env bash
# Starts the release binary on a scratch SQLite database and takes a headless
# Chromium screenshot of its Swagger UI (/docs/) into docs/swagger-ui.png.
# Needs: target/release/prompt-registry (cargo build --release), curl, and a
# Chromium binary (CHROMIUM, default /usr/bin/chromium; on Debian: apt-get
# install chromium). No network: the Swagger UI assets are served by the binary.
# Usage: scripts/screenshot-swagger.sh   (SHOT_PORT picks the port, default 18282)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/prompt-registry
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PORT=${SHOT_PORT:-18282}
BASE="http://127.0.0.1:$PORT"
OUT=docs/swagger-ui.png

[[ -x "$BIN" ]] || { echo "no $BIN: run cargo build --release first" >&2; exit 1; }
[[ -x "$CHROMIUM" ]] || { echo "no Chromium at $CHROMIUM (apt-get install chromium, or set CHROMIUM)" >&2; exit 1; }
if curl -s -o /dev/null "$BASE/"; then
    echo "port $PORT is already in use; set SHOT_PORT to a free port" >&2
    exit 1
fi

tmp=$(mktemp -d)
server=""
cleanup() {
    if [[ -n "$server" ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

APP_ENV=dev \
    APP__SERVER__HOST=127.0.0.1 \
    APP__SERVER__PORT="$PORT" \
    APP__DATABASE__URL="sqlite://$tmp/shot.db?mode=rwc" \
    APP__AUTH__ADMIN_KEY="screenshot-admin-key-0123456789abcdef0123" \
    APP__LOG__LEVEL=warn \
    "$BIN" >"$tmp/server.log" 2>&1 &
server=$!

for _ in $(seq 1 100); do
    if curl -fs -o /dev/null "$BASE/ready"; then
        break
    fi
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the server exited:" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    sleep 0.2
done
curl -fs -o /dev/null "$BASE/ready" || { echo "the server never became ready:" >&2; cat "$tmp/server.log" >&2; exit 1; }

# The virtual time budget lets Swagger UI fetch /openapi.json and render the
# operations before the screenshot is taken.
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$tmp/profile" --hide-scrollbars --window-size=1280,1400 \
    --virtual-time-budget=8000 --screenshot="$PWD/$OUT" "$BASE/docs/" 2>"$tmp/chromium.log" || {
    cat "$tmp/chromium.log" >&2
    exit 1
}

ls -l "$OUT"
