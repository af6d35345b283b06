#!/usr/bin/env bash
# Instructions per transfer and per HTTP payment, counted by valgrind's callgrind: the measures
# of issue 19 that the machine's load does not move (the same binary and inputs give the same
# count, within a fraction of a percent from thread scheduling).
#
#   ledger_instructions_per_transfer  ledger_bench, whole process (every thread), the uniform
#       and hot phases: the counts between callgrind's dumps just before the uniform phase and
#       just after the hot one (BP_BENCH_CALLGRIND), over the transfers of both. Setup and the
#       one-transaction-per-transfer baseline are outside the dumps: their counts move by
#       ±100 M from run to run (fsync-paced threads polling), which a difference of two whole
#       runs (issue 19's first method) carries into the figure.
#   ledger_instructions_per_uniform_transfer, ..._per_hot_transfer   each phase alone.
#   http_instructions_per_payment     http_bench's SCA-exempt transfers (bearer tokens), load
#       client included: the counts between the dump just before and the one just after
#       HTTP_REQUESTS transfers (BP_BENCH_CALLGRIND).
#   http_instructions_per_payment_without_checkpoints   the same less SQLite's WAL checkpoint
#       copying (walCheckpoint, inclusive), whose share depends on timing.
#
#   scripts/instructions.sh [ledger|http]...   (default: both)
#   BP_INSTR_TRANSFERS               ledger_bench transfers per phase (20000)
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

# Runs the release example $1 under callgrind (its environment set by the caller), its files
# in $OUT/$1.*; fails unless it left dump number $2 (BP_BENCH_CALLGRIND).
counted() {
  local name="$1" dump="$2"
  valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$OUT/$name.out" \
    "$TARGET/release/examples/$name" >"$OUT/$name.txt" 2>"$OUT/$name.err" ||
    { cat "$OUT/$name.err" >&2; exit 1; }
  if [ ! -f "$OUT/$name.out.$dump" ]; then
    echo "instructions: $name left no callgrind dump $dump" >&2
    cat "$OUT/$name.err" >&2
    exit 1
  fi
}

for part in "${PARTS[@]}"; do
  case "$part" in
    ledger)
      cargo build --quiet --release -p bp-storage --example ledger_bench
      n="${BP_INSTR_TRANSFERS:-20000}"
      echo "-- ledger_bench under callgrind, $n transfers per phase" >&2
      # Dump 1: setup; dump 2: the uniform phase; dump 3: the hot phase.
      BP_BENCH_TRANSFERS="$n" BP_BENCH_SUBMITTERS=1024 BP_BENCH_BASELINE_TRANSFERS=500 BP_BENCH_DIR="$OUT/db" \
        BP_BENCH_CALLGRIND=1 counted ledger_bench 3
      u="$(total "$OUT/ledger_bench.out.2")" h="$(total "$OUT/ledger_bench.out.3")"
      # Each of ledger_bench's 1,024 submitters makes ceil(n / 1024) transfers.
      done_n=$(( (n + 1023) / 1024 * 1024 ))
      echo "ledger_instructions_per_transfer $(( (u + h) / (2 * done_n) ))"
      echo "ledger_instructions_per_uniform_transfer $(( u / done_n ))"
      echo "ledger_instructions_per_hot_transfer $(( h / done_n ))"
      ;;
    http)
      cargo build --quiet --release -p bp-server-example --example http_bench
      requests="${BP_INSTR_HTTP_REQUESTS:-6400}" connections="${BP_INSTR_HTTP_CONNECTIONS:-32}"
      echo "-- http_bench under callgrind, $requests transfers over $connections connections" >&2
      # The first dump holds what came before the transfers, the second the transfers alone.
      BP_BENCH_ONLY=transfers BP_BENCH_CONNECTIONS="$connections" BP_BENCH_REQUESTS="$requests" BP_BENCH_CALLGRIND=1 \
        counted http_bench 2
      all="$(total "$OUT/http_bench.out.2")"
      echo "http_instructions_per_payment $(( all / requests ))"
      # SQLite's checkpoint copying (inclusive): it moves by 5,000-20,000 per payment from run to
      # run with the checkpoint thread's timing (how far the WAL grows before it restarts), so
      # changes elsewhere compare better without it. (awk reads to the end: stopping at the match
      # would make callgrind_annotate die of SIGPIPE, and pipefail end this script unannounced.)
      copying="$(callgrind_annotate --inclusive=yes "$OUT/http_bench.out.2" 2>/dev/null |
        awk '!found && /sqlite3\.c:walCheckpoint \[/ { gsub(",", "", $1); found = $1 } END { print found }')"
      echo "http_instructions_per_payment_without_checkpoints $(( (all - ${copying:-0}) / requests ))"
      ;;
    *)
      echo "instructions: unknown part '$part' (ledger or http)" >&2
      exit 2
      ;;
  esac
done
