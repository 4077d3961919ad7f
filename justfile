# Local shortcuts. Plain cargo works without just: see README.md.

pg_url := env_var_or_default("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
redis_url := env_var_or_default("TEST_REDIS_URL", "redis://127.0.0.1:6379")

# Serve on the embedded SQLite database.
run:
    cargo run --release

# Every test: SQLite, and the local PostgreSQL and Redis.
test:
    TEST_DATABASE_URL={{pg_url}} TEST_REDIS_URL={{redis_url}} cargo test --workspace

# Formatting and lints, as CI checks them (the file checks need `pip install pre-commit`).
lint:
    scripts/fmt.sh --check
    cargo clippy --workspace --all-targets -- -D warnings
    SKIP=cargo-fmt,cargo-clippy pre-commit run --all-files

# rustfmt; imports are regrouped std / external / crate when the nightly rustfmt is installed.
fmt:
    scripts/fmt.sh

# Start the local PostgreSQL and Redis (the machine's services, else containers).
db-up:
    scripts/db.sh up

# Recreate the local database `prompt_registry` (DB_NAME), migrated, and drop stale test databases.
db-reset:
    scripts/db.sh reset

# Migrations: just migrate up|down|status|fresh|reset (the configured database; DATABASE_URL overrides it).
migrate *args:
    cargo run -q --release -- migrate {{args}}

# The README's curl tour against a running server (API_KEY must be set).
tour base="http://127.0.0.1:8080":
    scripts/tour.sh {{base}}

# The hot-path benchmark (active-version fetch: cache off, in process, Redis lease and check modes, /health and a bare actix-web route as ceilings; label moves with two replicas). --smoke for a quick run.
bench *args:
    python3 scripts/bench_fetch.py {{args}}

# Instructions per request of the cached fetch and of the bare route, counted by valgrind's callgrind: the same for the same build however busy the machine is.
bench-instructions *args:
    scripts/bench_instructions.sh {{args}}

# The ingestion benchmark (sync, async and batch POSTs against a raw COPY).
bench-ingest *args:
    python3 scripts/bench_ingest.py {{args}}

# The web console: every page's time on 1,000 prompts, 10,000 versions and 1,000,000 runs, and the assets' size. --smoke for a quick run.
bench-console *args:
    python3 scripts/bench_console.py {{args}}

# Screenshots of the console's main pages (docs/screenshots/), taken with Chromium from a demo database.
screenshots:
    cargo build --release -q -p prompt-registry
    [ -x target/e2e-venv/bin/python ] || scripts/e2e.sh --collect-only -q
    target/e2e-venv/bin/python scripts/screenshots.py

# The change stream: move-to-client latency and idle connections per process. --smoke for a quick run.
bench-stream *args:
    python3 scripts/bench_stream.py {{args}}

# The Python client: ruff, mypy --strict and its tests against the release binary.
client-test *args:
    cargo build --release -q -p prompt-registry
    clients/python/scripts/test.sh {{args}}

# The Python client's benchmark (cached get_prompt, log_run, promotion with push). --smoke for a quick run.
client-bench *args:
    cargo build --release -q -p prompt-registry
    [ -x clients/python/.venv/bin/python ] || clients/python/scripts/test.sh -x -q
    clients/python/.venv/bin/python clients/python/scripts/bench.py {{args}}

# EXPLAIN ANALYZE of the runs queries on 1,000,000 rows.
explain rows="1000000":
    scripts/explain-runs.sh {{rows}}

# Schemathesis against the release server's OpenAPI document: zero 5xx, zero schema violations.
schemathesis *args:
    cargo build --release -q -p prompt-registry
    scripts/schemathesis.sh {{args}}

# End-to-end tests (tests/e2e, pytest) against the release binary: just e2e -k mcp
e2e *args:
    cargo build --release -q -p prompt-registry
    scripts/e2e.sh {{args}}

# Deeper API fuzzing: Schemathesis with 1000 generated cases per operation.
fuzz examples="1000":
    cargo build --release -q -p prompt-registry
    scripts/schemathesis.sh --max-examples {{examples}}

# Test coverage (cargo-llvm-cov): HTML and summary under target/llvm-cov/.
coverage:
    TEST_DATABASE_URL={{pg_url}} TEST_REDIS_URL={{redis_url}} scripts/coverage.sh

# Render docs/architecture.svg and .png from the Mermaid source in docs/architecture.md (npm, Chromium).
diagram:
    scripts/render-diagram.sh

# Screenshot Swagger UI into docs/swagger-ui.png (headless Chromium against the release binary).
screenshot:
    cargo build --release -q -p prompt-registry
    scripts/screenshot-swagger.sh

# What CI runs.
ci:
    bash .ci/run
