#!/usr/bin/env bash
# End-to-end tests: the release binary, driven over HTTP by real clients
# (the official MCP Python SDK among them, and the OpenAI client traced by
# OpenLLMetry and OpenInference), from tests/e2e with pytest.
#
#   scripts/e2e.sh [pytest args…]      e.g. scripts/e2e.sh -k mcp
#
# The binary is PROMPT_REGISTRY_BIN, by default target/release/prompt-registry;
# this script does not build it (`just e2e` does). PostgreSQL tests run when
# TEST_DATABASE_URL is set and `psql` is installed, and are skipped otherwise.
#
# The virtualenv is created once, at target/e2e-venv, with pinned versions.
# mcp stays on 1.x: 2.x removed `streamablehttp_client`, which these tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/e2e-venv
requirements=(
  pytest==9.2.0 httpx==0.28.1 mcp==1.30.0 standardwebhooks==1.1.0
  openai==3.57.0 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-instrumentation-openai==0.62.4 openinference-instrumentation-openai==0.1.66
  playwright==1.65.2 axe-playwright-python==0.1.8
)
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi

export PROMPT_REGISTRY_BIN="${PROMPT_REGISTRY_BIN:-target/release/prompt-registry}"
if [[ ! -x "$PROMPT_REGISTRY_BIN" ]]; then
  echo "e2e.sh: no binary at $PROMPT_REGISTRY_BIN; build it with cargo build --release -p prompt-registry (or run just e2e)" >&2
  exit 1
fi
# Absolute, since the servers run in each test's temporary directory.
PROMPT_REGISTRY_BIN="$(cd "$(dirname "$PROMPT_REGISTRY_BIN")" && pwd)/$(basename "$PROMPT_REGISTRY_BIN")"
export PROMPT_REGISTRY_BIN

# No .pytest_cache or __pycache__ left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -p no:cacheprovider tests/e2e -v -rs "$@"
