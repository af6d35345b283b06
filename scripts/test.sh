#!/usr/bin/env bash
# The whole test suite of bp: formatting, lints with every feature, and every test.
# `.ci/run` runs exactly this. Needs only a Rust toolchain (SQLite is bundled).
set -euo pipefail
cd "$(dirname "$0")/.."

# rustup's cargo, when the shell that runs this has not put it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== cargo test (all features)"
cargo test --workspace --all-features
