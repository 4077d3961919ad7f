#!/usr/bin/env bash
# Renders the first ```mermaid block of docs/architecture.md to docs/architecture.svg
# and docs/architecture.png (1600 px wide, white background).
# Needs: node and npm (the first run installs @mermaid-js/mermaid-cli into
# target/tools/mermaid-cli, without a browser download) and a Chromium binary
# (CHROMIUM, default /usr/bin/chromium; on Debian: apt-get install chromium).
# Usage: scripts/render-diagram.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=docs/architecture.md
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
MMDC_VERSION=${MMDC_VERSION:-11.17.0}
TOOLS=target/tools/mermaid-cli
MMDC="$TOOLS/node_modules/.bin/mmdc"

if [[ ! -x "$CHROMIUM" ]]; then
    echo "no Chromium at $CHROMIUM (apt-get install chromium, or set CHROMIUM)" >&2
    exit 1
fi

if [[ ! -x "$MMDC" ]]; then
    mkdir -p "$TOOLS"
    [[ -f "$TOOLS/package.json" ]] || echo '{"private": true}' >"$TOOLS/package.json"
    PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix "$TOOLS" --ignore-scripts --no-audit --no-fund \
        "@mermaid-js/mermaid-cli@$MMDC_VERSION" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The first ```mermaid ... ``` block, without its fences.
awk '/^```mermaid[[:space:]]*$/ { inside = 1; next }
     inside && /^```/           { exit }
     inside                     { print }' "$SRC" >"$tmp/diagram.mmd"
if [[ ! -s "$tmp/diagram.mmd" ]]; then
    echo "no mermaid block in $SRC" >&2
    exit 1
fi

cat >"$tmp/puppeteer.json" <<EOF
{
  "executablePath": "$CHROMIUM",
  "args": ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"]
}
EOF
# Plain SVG text instead of HTML labels, so the SVG also renders outside browsers.
cat >"$tmp/mermaid.json" <<'EOF'
{ "theme": "default", "htmlLabels": false, "flowchart": { "htmlLabels": false } }
EOF

render() {
    "$MMDC" --quiet --puppeteerConfigFile "$tmp/puppeteer.json" --configFile "$tmp/mermaid.json" \
        --backgroundColor white --input "$tmp/diagram.mmd" "$@"
}
render --output docs/architecture.svg
render --output docs/architecture.png --width 1600 --scale 1

ls -l docs/architecture.svg docs/architecture.png
