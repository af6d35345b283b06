#!/usr/bin/env bash
# The whole test suite of bp: formatting, lints with every feature, and every test.
# `.ci/run` runs exactly this. Needs a Rust toolchain and Python 3 (schemathesis is installed into
# a virtual environment under ~/.cache/bp on first use); SQLite is bundled.
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

# Tools installed outside the clone, once, and reused by later runs.
BP_CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"
mkdir -p "$BP_CACHE"

echo "== schemathesis against the live reference server (every check)"
SCHEMATHESIS_VERSION="4.32.5"
VENV="$BP_CACHE/venv-schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo run --quiet -p bp-server-example --example api_fuzz -- "$VENV/bin/schemathesis"
