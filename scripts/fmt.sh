#!/usr/bin/env bash
# Formats the workspace (or checks it, with --check) under rustfmt.toml.
#
# rustfmt.toml groups imports std / external / crate; that option is unstable,
# so the nightly rustfmt applies it when installed
# (rustup toolchain install nightly --profile minimal -c rustfmt). Stable
# rustfmt checks everything else, so the result is the same on both.
set -euo pipefail
cd "$(dirname "$0")/.."

unstable='unstable features are only available in nightly channel'
# Stable rustfmt warns once per crate about the nightly-only option.
cargo fmt --all "$@" 2> >(grep -v "$unstable" >&2)
if rustup run nightly rustfmt --version >/dev/null 2>&1; then
  cargo +nightly fmt --all "$@"
else
  echo "fmt.sh: no nightly rustfmt; imports were not checked for std / external / crate grouping" >&2
fi
