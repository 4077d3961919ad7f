#!/usr/bin/env bash
# The Python client's checks, as CI runs them: a virtual environment (made
# when missing), ruff, mypy --strict, and the tests against the real server
# binary (PROMPT_REGISTRY_BIN, default ../../target/release/prompt-registry).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

export PROMPT_REGISTRY_BIN=${PROMPT_REGISTRY_BIN:-$(cd ../.. && pwd)/target/release/prompt-registry}

echo "== ruff check"
.venv/bin/ruff check .
echo "== ruff format --check"
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy --strict
echo "== pytest (server: $PROMPT_REGISTRY_BIN)"
.venv/bin/pytest -q -rs "$@"
