#!/usr/bin/env bash
# The README's curl tour, runnable: create a prompt, two versions, fetch the
# active one, roll back, render; then a staging → production promotion, a 10 %
# rollout and a rollback from the label's history. Exits non-zero on the first
# unexpected answer.
# Usage: API_KEY=pr_… scripts/tour.sh [BASE_URL]   (default http://127.0.0.1:8080)
# The key needs read, write and release (production is protected); admin has all.
set -euo pipefail
BASE=${1:-http://127.0.0.1:8080}
: "${API_KEY:?set API_KEY to a key with the read, write and release scopes}"
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
step "roll back to version 1 (it drops the variable city: production is protected, so say so)"
call POST "/v1/prompts/$ENC/versions/1/activate?allow_breaking=true"
step "render the active version"
call POST "/v1/prompts/$ENC/render" '{"variables":{"name":"Ada"}}'
step "render version 2 explicitly"
call POST "/v1/prompts/$ENC/render" '{"version":2,"variables":{"name":"Ada"}}'
step "version 3 goes to staging only"
call POST "/v1/prompts/$ENC/versions" '{"template":"Hey {{ name }}!","variables":{"name":{"type":"string"}},"activate":false,"labels":["staging"],"commit_message":"shorter"}'
step "what staging serves"
call GET "/v1/prompts/$ENC/versions/staging"
step "promote it: production moves to 3, only if it is still on 1"
call PUT "/v1/prompts/$ENC/labels/production" '{"version":3,"expected_version":1,"reason":"tested on staging"}'
step "a 10 % rollout: version 4 for one subject in ten, the same ones every time"
call POST "/v1/prompts/$ENC/versions" '{"template":"Hey {{ name }}, welcome!","variables":{"name":{"type":"string"}},"activate":false,"commit_message":"warmer"}'
call PUT "/v1/prompts/$ENC/labels/production" '{"split":[{"version":3,"weight":90},{"version":4,"weight":10}],"reason":"try 4 on 10 %"}'
call GET "/v1/prompts/$ENC/versions/production?subject=user-42"
step "the label's history, newest first"
call GET "/v1/prompts/$ENC/labels/production/history"
step "roll back from history: production returns to version 3"
call POST "/v1/prompts/$ENC/labels/production/rollback" '{"reason":"4 answers too long"}'
call GET "/v1/prompts/$ENC/versions/active"
step "who changed what (admin keys)"
call GET "/v1/audit?target=prompt:$ENC*&limit=5"
step "a shared preamble, included by this prompt's next version"
SHARED="tour/safety-$(date +%s%N)"
SENC=${SHARED//\//%2F}
call POST /v1/prompts "{\"name\":\"$SHARED\"}"
call POST "/v1/prompts/$SENC/versions" '{"template":"Never reveal {{ secret_kind }}.","variables":{"secret_kind":{"default":"API keys"}}}'
call POST "/v1/prompts/$ENC/versions" "{\"template\":\"{{> $SHARED@production}}\\nHey {{ name }}, in {{ lang }}!\",\"variables\":{\"name\":{\"type\":\"string\"},\"lang\":{}},\"activate\":false}"
call GET "/v1/prompts/$SENC/dependents"
step "what changed from production, and is it breaking?"
call GET "/v1/prompts/$ENC/diff?from=production&to=latest"
step "promoting a breaking change needs allow_breaking"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
  -d '{"version":5}' "$BASE/v1/prompts/$ENC/labels/production")
printf '→ %s (refused)\n' "$code"
[ "$code" = 409 ] || { echo "expected 409 breaking_change, got $code" >&2; exit 1; }
call PUT "/v1/prompts/$ENC/labels/production" '{"version":5,"allow_breaking":true,"reason":"callers send lang now"}'
