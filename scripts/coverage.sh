#!/usr/bin/env bash
# Line and region coverage of the whole test suite with cargo-llvm-cov.
#
# Runs every test once with instrumentation (in its own target directory, so
# the normal build stays warm), then writes:
#   target/llvm-cov/html/index.html   the browsable report
#   target/llvm-cov/summary.txt       per-file figures and the TOTAL line
#   target/llvm-cov/lcov.info         for tools that read LCOV
# The PostgreSQL and Redis tests are covered when TEST_DATABASE_URL and
# TEST_REDIS_URL are set (`just coverage` sets both for the local services).
# Installs llvm-tools (rustup) and cargo-llvm-cov (crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools-preview
command -v cargo-llvm-cov >/dev/null || cargo install --locked cargo-llvm-cov

cargo llvm-cov clean --workspace
cargo llvm-cov --workspace --no-report
mkdir -p target/llvm-cov
cargo llvm-cov report --html
cargo llvm-cov report --lcov --output-path target/llvm-cov/lcov.info
cargo llvm-cov report --summary-only | tee target/llvm-cov/summary.txt
echo "HTML report: target/llvm-cov/html/index.html"
