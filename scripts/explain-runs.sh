#!/usr/bin/env bash
# Loads ROWS runs (default 1,000,000) into a fresh PostgreSQL database and
# prints EXPLAIN (ANALYZE) for the queries the runs API makes.
# Usage: scripts/explain-runs.sh [ROWS]   (PG_ADMIN_URL picks the server)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ADMIN=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
DB="explain_runs_$$"
psql "$ADMIN" -qc "CREATE DATABASE $DB"
trap 'psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
URL="${ADMIN%/*}/$DB"
APP__DATABASE__URL="$URL" cargo run -q --release -- migrate up >/dev/null

psql "$URL" -q -v ON_ERROR_STOP=1 <<SQL
INSERT INTO prompts (id, name, description, tags, created_at, updated_at, latest_version)
SELECT gen_random_uuid(), 'prompt-' || g, NULL, '[]', now(), now(), 3 FROM generate_series(1, 100) g;
INSERT INTO prompt_versions (id, prompt_id, version, kind, template, variables, config, commit_message, created_at)
SELECT gen_random_uuid(), p.id, v, 'text', '"t"', '{}', '{}', NULL, now()
FROM prompts p CROSS JOIN generate_series(1, 3) v;
INSERT INTO prompt_labels (prompt_id, name, version, protected, revision, updated_at)
SELECT id, 'production', 3, TRUE, 1, now() FROM prompts;
-- The partitions of the months the 30 days reach back into, as the server
-- would have created them ahead of time.
DO \$\$
DECLARE m timestamptz;
BEGIN
  FOR m IN SELECT generate_series(date_trunc('month', now() - interval '31 days', 'UTC'), date_trunc('month', now(), 'UTC'), interval '1 month') LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF prompt_runs FOR VALUES FROM (%L) TO (%L)',
      'prompt_runs_p' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM'),
      (lpad(to_hex((extract(epoch FROM m) * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid,
      (lpad(to_hex((extract(epoch FROM m + interval '1 month') * 1000)::bigint), 12, '0') || repeat('0', 20))::uuid);
  END LOOP;
END
\$\$;
-- Ids are UUIDv7 of the creation time, as the service makes them.
INSERT INTO prompt_runs (id, prompt_id, version_id, version, input, output, status, error, model, latency_us,
                         prompt_tokens, completion_tokens, cost_nanos, metadata, tags, started_at, created_at)
SELECT (lpad(to_hex((extract(epoch FROM t.at) * 1000)::bigint), 12, '0') || '7' || substr(md5(g::text), 1, 3)
        || '8' || substr(md5(g::text), 4, 15))::uuid,
       v.prompt_id, v.id, v.version, '{"q": "x"}', '"answer"',
       CASE WHEN g % 13 = 0 THEN 'error' ELSE 'success' END, CASE WHEN g % 13 = 0 THEN 'boom' END,
       CASE WHEN g % 2 = 0 THEN 'model-a' ELSE 'model-b' END, ((g * 7919) % 3000)::bigint * 1000, (g % 500)::int, (g % 300)::int,
       (g * 104729) % 5000000, '{}', '[]', NULL,
       t.at
FROM generate_series(1::bigint, $ROWS) g
CROSS JOIN LATERAL (SELECT now() - make_interval(secs => g * 2592000.0 / $ROWS) AS at) t
JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS i, id, prompt_id, version FROM prompt_versions) v ON v.i = g % 300;
VACUUM ANALYZE;
SQL

explain() {
  printf '\n-- %s\n' "$1"
  psql "$URL" -qAt -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING ON, SUMMARY ON) $2"
}
# A prompt's runs are selected with r.prompt_id = (SELECT id FROM prompts WHERE name = …),
# exactly as the repository builds it.
P="r.prompt_id = (SELECT id FROM prompts WHERE name = 'prompt-42')"
explain "GET /v1/runs (newest first, first page)" \
  "SELECT r.* FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id ORDER BY r.created_at DESC, r.id DESC LIMIT 21"
explain "GET /v1/prompts/{name}/runs (newest first, next page)" \
  "SELECT r.*, p.name FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE $P AND (r.created_at, r.id) < (now() - interval '3 days', '00000000-0000-0000-0000-000000000000') ORDER BY r.created_at DESC, r.id DESC LIMIT 21"
explain "GET /v1/prompts/{name}/runs?version=2" \
  "SELECT r.*, p.name FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE $P AND r.version = 2 ORDER BY r.created_at DESC, r.id DESC LIMIT 21"
explain "GET /v1/prompts/{name}/runs?sort=-latency_ms" \
  "SELECT r.*, p.name FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE $P ORDER BY r.latency_us DESC, r.id DESC LIMIT 21"
explain "GET /v1/prompts/{name}/runs?sort=cost" \
  "SELECT r.*, p.name FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE $P ORDER BY r.cost_nanos ASC, r.id ASC LIMIT 21"
explain "GET /v1/runs/{id}" \
  "SELECT r.*, p.name FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE r.id = (SELECT id FROM prompt_runs LIMIT 1)"
explain "GET /v1/prompts/{name}/stats?from=(7 days ago)&bucket=day" \
  "SELECT r.version, date_trunc('day', r.created_at, 'UTC') AS bucket, count(*), count(*) FILTER (WHERE r.status = 'error'), percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_us) / 1000, percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_us) / 1000, percentile_cont(0.99) WITHIN GROUP (ORDER BY r.latency_us) / 1000, max(r.latency_us)::float8 / 1000, COALESCE(sum(r.prompt_tokens),0)::bigint, COALESCE(sum(r.completion_tokens),0)::bigint, COALESCE(sum(r.cost_nanos),0)::bigint FROM prompt_runs r JOIN prompts p ON p.id = r.prompt_id WHERE $P AND r.created_at >= now() - interval '7 days' GROUP BY r.version, bucket ORDER BY r.version, bucket"
echo
psql "$URL" -qAt -c "SELECT 'rows: ' || count(*) FROM prompt_runs"
psql "$URL" -qAt -c "SELECT 'rows per partition: ' || string_agg(tableoid::regclass || ' ' || n, ', ' ORDER BY tableoid::regclass::text) FROM (SELECT tableoid, count(*) AS n FROM prompt_runs GROUP BY tableoid) c"
psql "$URL" -qAt -c "SELECT 'table + indexes: ' || pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('prompt_runs')"
