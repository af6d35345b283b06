#!/usr/bin/env bash
# Runs the SDK's terminal example (bp-ffi/examples/terminal.py) against a running demo server:
# builds bp-ffi and the server binary (for its `totp` command), generates the Python bindings
# into a temporary folder, and starts the program there.
#
#   scripts/ffi-example.sh [base-url] [username]     (defaults: http://127.0.0.1:8080, ada)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/bp-ffi-example.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT
cargo build --quiet -p bp-ffi --features bindgen --lib --bin uniffi-bindgen
cargo build --quiet -p bp-server-example --bin bp-server-example
"$TARGET/debug/uniffi-bindgen" generate "$TARGET/debug/libbp_ffi.so" --no-format --language python --out-dir "$OUT" >/dev/null
cp "$TARGET/debug/libbp_ffi.so" "$OUT/"
BP_SERVER_BIN="$(cd "$TARGET/debug" && pwd)/bp-server-example" PYTHONPATH="$OUT" python3 bp-ffi/examples/terminal.py "$@"
