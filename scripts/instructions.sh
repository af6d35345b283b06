#!/usr/bin/env bash
# Instructions per transfer and per HTTP payment, counted by valgrind's callgrind: the measures
# of issue 19 that the machine's load does not move (the same binary and inputs give the same
# count, within a fraction of a percent from thread scheduling).
#
#   ledger_instructions_per_transfer  ledger_bench, whole process: the marginal count between a
#       run of SMALL and one of LARGE transfers per phase (uniform and hot, both counted;
#       the one-transaction-per-transfer baseline fixed at 500), so setup and start-up cancel.
#   http_instructions_per_payment     http_bench's SCA-exempt transfers (bearer tokens), load
#       client included: the counts between the dump just before and the one just after
#       HTTP_REQUESTS transfers (BP_BENCH_CALLGRIND).
#
#   scripts/instructions.sh [ledger|http]...   (default: both)
#   BP_INSTR_SMALL, BP_INSTR_LARGE   ledger_bench transfers per phase (20000, 60000)
#   BP_INSTR_HTTP_REQUESTS           http_bench transfers (6400)
#   BP_INSTR_HTTP_CONNECTIONS        over this many connections (32, http_bench's default)
#
# Builds the release examples first (long when cold); the counting itself takes about ten
# minutes on the 2-core VM. Report wall-clock
# figures beside these (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y --no-install-recommends valgrind
fi
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(ledger http)
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/bp-instructions.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

# The `totals:` (older valgrind: `summary:`) line of a callgrind output file.
total() {
  awk '/^(totals|summary):/ { print $2; exit }' "$1"
}

for part in "${PARTS[@]}"; do
  case "$part" in
    ledger)
      cargo build --quiet --release -p bp-storage --example ledger_bench
      small="${BP_INSTR_SMALL:-20000}" large="${BP_INSTR_LARGE:-60000}"
      for n in "$small" "$large"; do
        echo "-- ledger_bench under callgrind, $n transfers per phase" >&2
        BP_BENCH_TRANSFERS="$n" BP_BENCH_BASELINE_TRANSFERS=500 BP_BENCH_DIR="$OUT/db-$n" \
          valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$OUT/ledger-$n.out" \
          "$TARGET/release/examples/ledger_bench" >"$OUT/ledger-$n.txt" 2>"$OUT/ledger-$n.err" ||
          { cat "$OUT/ledger-$n.err" >&2; exit 1; }
      done
      a="$(total "$OUT/ledger-$small.out")" b="$(total "$OUT/ledger-$large.out")"
      # Two phases of each size: uniform and hot.
      echo "ledger_instructions_per_transfer $(( (b - a) / (2 * (large - small)) ))"
      echo "ledger_instructions_small_run $a"
      echo "ledger_instructions_large_run $b"
      ;;
    http)
      cargo build --quiet --release -p bp-server-example --example http_bench
      requests="${BP_INSTR_HTTP_REQUESTS:-6400}" connections="${BP_INSTR_HTTP_CONNECTIONS:-32}"
      echo "-- http_bench under callgrind, $requests transfers over $connections connections" >&2
      BP_BENCH_ONLY=transfers BP_BENCH_CONNECTIONS="$connections" BP_BENCH_REQUESTS="$requests" BP_BENCH_CALLGRIND=1 \
        valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$OUT/http.out" \
        "$TARGET/release/examples/http_bench" >"$OUT/http.txt" 2>"$OUT/http.err" ||
        { cat "$OUT/http.err" >&2; exit 1; }
      # The first dump holds what came before the transfers, the second the transfers alone.
      if [ ! -f "$OUT/http.out.2" ]; then
        echo "instructions: http_bench left no second callgrind dump" >&2
        cat "$OUT/http.err" >&2
        exit 1
      fi
      echo "http_instructions_per_payment $(( $(total "$OUT/http.out.2") / requests ))"
      ;;
    *)
      echo "instructions: unknown part '$part' (ledger or http)" >&2
      exit 2
      ;;
  esac
done
