#!/usr/bin/env bash
# Local databases for development and the tests.
#
#   scripts/db.sh up      PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379:
#                         starts the machine's own services when they are
#                         installed and down, else containers (postgres:16 with
#                         trust auth, redis:7) published on those ports.
#   scripts/db.sh reset   drops and recreates the PostgreSQL database
#                         $DB_NAME (default prompt_registry), applies every
#                         migration, and drops test databases left by killed
#                         test runs (prt_*).
#
# Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), DB_NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
db_name=${DB_NAME:-prompt_registry}

pg_up() { pg_isready -h "$PGHOST" -p "$PGPORT" -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
# container NAME PORT [docker run arguments...]: starts NAME, creating it the first time.
container() {
  local name=$1 port=$2
  shift 2
  docker start "$name" >/dev/null 2>&1 || docker run -d --name "$name" -p "127.0.0.1:$port:$port" "$@" >/dev/null
}
wait_for() { for _ in $(seq 60); do "$1" && return 0; sleep 0.5; done; "$1"; }

up() {
  if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    else
      container prompt-registry-postgres 5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16
    fi
    wait_for pg_up
  fi
  if ! redis_up; then
    if command -v redis-server >/dev/null; then
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    else
      container prompt-registry-redis 6379 redis:7 redis-server --save "" --appendonly no
    fi
    wait_for redis_up
  fi
  echo "PostgreSQL: postgres://$PGUSER@$PGHOST:$PGPORT/test   Redis: redis://127.0.0.1:6379"
}

reset() {
  up >/dev/null
  psql -d postgres -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS \"$db_name\" WITH (FORCE)" \
    -c "CREATE DATABASE \"$db_name\""
  for stale in $(psql -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'prt\_%'"); do
    psql -d postgres -qc "DROP DATABASE IF EXISTS \"$stale\" WITH (FORCE)"
  done
  APP__DATABASE__URL="postgres://$PGUSER@$PGHOST:$PGPORT/$db_name" cargo run -q --release -- migrate up
  echo "fresh database: postgres://$PGUSER@$PGHOST:$PGPORT/$db_name"
}

case "${1:-}" in
  up) up ;;
  reset) reset ;;
  *) echo "usage: scripts/db.sh up|reset" >&2; exit 2 ;;
esac
