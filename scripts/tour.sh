#!/usr/bin/env bash
# The README's curl tour, runnable: create a prompt, two versions, fetch the
# active one, roll back, render. Exits non-zero on the first unexpected answer.
# Usage: API_KEY=pr_… scripts/tour.sh [BASE_URL]   (default http://127.0.0.1:8080)
set -euo pipefail
BASE=${1:-http://127.0.0.1:8080}
: "${API_KEY:?set API_KEY to a key with the read and write scopes}"
NAME="tour/greeting-$(date +%s%N)"
ENC=${NAME//\//%2F}

step() { printf '\n$ %s\n' "$*"; }
call() { # METHOD PATH [BODY] -> prints status and body, fails on >= 400
  local method=$1 path=$2 body=${3:-}
  local args=(-sS -X "$method" -w '\n%{http_code}' -H "Authorization: Bearer $API_KEY" "$BASE$path")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  local out; out=$(curl "${args[@]}")
  local code=${out##*$'\n'}
  printf '%s\n→ %s\n' "${out%$'\n'*}" "$code"
  [ "$code" -lt 400 ] || { echo "unexpected status $code" >&2; exit 1; }
}

step "create a prompt"
call POST /v1/prompts "{\"name\":\"$NAME\",\"description\":\"Greets a user\",\"tags\":[\"demo\"]}"
step "version 1"
call POST "/v1/prompts/$ENC/versions" '{"template":"Hello {{ name }}!","variables":{"name":{"type":"string"}},"config":{"model":"gpt-4o-mini","temperature":0.2},"commit_message":"first"}'
step "version 2 (becomes active)"
call POST "/v1/prompts/$ENC/versions" '{"template":"Hi {{ name }}, how is {{ city }}?","variables":{"name":{"type":"string"},"city":{"default":"Paris"}},"commit_message":"friendlier"}'
step "fetch the active version"
call GET "/v1/prompts/$ENC/versions/active"
step "roll back to version 1"
call POST "/v1/prompts/$ENC/versions/1/activate"
step "render the active version"
call POST "/v1/prompts/$ENC/render" '{"variables":{"name":"Ada"}}'
step "render version 2 explicitly"
call POST "/v1/prompts/$ENC/render" '{"version":2,"variables":{"name":"Ada"}}'
