#!/usr/bin/env bash
# The mobile SDK's bindings against a live reference server: builds bp-ffi (the unstripped
# debug library) and the server, generates the Kotlin, Swift and Python bindings with the
# workspace's own uniffi-bindgen (bp-ffi's `bindgen` feature, the scaffolding's uniffi version),
# checks the Swift declarations (no Swift toolchain here), and runs
#   - the pytest suite (bp-ffi/tests/python), pytest from a venv under ~/.cache/bp;
#   - the Kotlin JUnit suite (bp-ffi/tests/kotlin) on the JVM with JNA, through Maven (its
#     artifacts fetched into ~/.m2 on first use);
# each of which starts its own server in development mode on a free loopback port.
#
#   scripts/ffi-test.sh [python|kotlin|swift]...      (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(swift python kotlin)
TARGET="${CARGO_TARGET_DIR:-target}"
BP_CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/bp-ffi-bindings.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

# The library, the generator and the server as the suite's `cargo test --workspace --all-features`
# built them (nothing is rebuilt after that step; building them with other features would rebuild
# much of the tree); BP_FFI_BUILD=package builds just these three instead, for a quick local run.
echo "-- building bp-ffi, its binding generator and the reference server"
if [ "${BP_FFI_BUILD:-workspace}" = package ]; then
  cargo build --quiet -p bp-ffi --features bindgen --lib --bin uniffi-bindgen
  cargo build --quiet -p bp-server-example --bin bp-server-example
  LIB="$TARGET/debug/libbp_ffi.so"
else
  cargo test --quiet --workspace --all-features --no-run
  # A test build leaves the cdylib in deps/ (it is uplifted only by `cargo build`).
  LIB="$TARGET/debug/deps/libbp_ffi.so"
  if [ ! -e "$LIB" ] || [ ! -x "$TARGET/debug/uniffi-bindgen" ]; then
    echo "ffi-test: the test build left no libbp_ffi.so or uniffi-bindgen; building them" >&2
    cargo build --quiet -p bp-ffi --features bindgen --lib --bin uniffi-bindgen
    LIB="$TARGET/debug/libbp_ffi.so"
  fi
fi
export BP_SERVER_BIN="$(cd "$TARGET/debug" && pwd)/bp-server-example"
for built in "$LIB" "$TARGET/debug/uniffi-bindgen" "$BP_SERVER_BIN"; do
  [ -e "$built" ] || { echo "ffi-test: $built was not built" >&2; exit 1; }
done

echo "-- generating the Kotlin (JVM), Swift and Python bindings from $LIB"
# Kotlin for a plain JVM: uniffi's default (`android = false`); an Android app's build sets
# `android = true` (docs/mobile.md).
"$TARGET/debug/uniffi-bindgen" generate "$LIB" --no-format \
  --language kotlin --language swift --language python --out-dir "$OUT" >/dev/null
cp "$LIB" "$OUT/"

run_step() {
  case "$1" in
    swift)
      echo "-- Swift: the generated declarations an iOS app uses"
      python3 bp-ffi/tests/swift/check_swift.py "$OUT/bp_ffi.swift" "$OUT/bp_ffiFFI.h"
      ;;
    python)
      echo "-- Python: pytest against a live server"
      PYTEST_VERSION="9.2.0"
      VENV="$BP_CACHE/venv-ffi-pytest-$PYTEST_VERSION"
      if [ ! -x "$VENV/bin/pytest" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "pytest==$PYTEST_VERSION"
      fi
      PYTHONPATH="$OUT:bp-ffi/tests/python" "$VENV/bin/pytest" -q -p no:cacheprovider bp-ffi/tests/python
      ;;
    kotlin)
      echo "-- Kotlin: JUnit on the JVM (JNA) against a live server"
      mvn -B -ntp -f bp-ffi/tests/kotlin/pom.xml test \
        -Dbp.bindings.dir="$OUT" -Djna.library.path="$OUT" -Dbp.server.bin="$BP_SERVER_BIN" -Dbp.build.dir="$OUT/maven"
      ;;
    *) echo "unknown step $1" >&2; return 2 ;;
  esac
}

# The Kotlin suite runs beside the others (its own server; its log is printed when it ends):
# both suites spend much of their time waiting for the next TOTP code.
kotlin_pid=""
for step in "${STEPS[@]}"; do
  if [ "$step" = kotlin ] && [ ${#STEPS[@]} -gt 1 ]; then
    run_step kotlin >"$OUT/kotlin.log" 2>&1 &
    kotlin_pid=$!
  fi
done
for step in "${STEPS[@]}"; do
  if [ "$step" != kotlin ] || [ -z "$kotlin_pid" ]; then
    run_step "$step"
  fi
done
if [ -n "$kotlin_pid" ]; then
  status=0
  wait "$kotlin_pid" || status=$?
  cat "$OUT/kotlin.log"
  [ "$status" -eq 0 ] || { echo "ffi-test: the Kotlin suite failed" >&2; exit "$status"; }
fi
