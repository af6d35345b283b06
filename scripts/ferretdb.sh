#!/usr/bin/env bash
# Runs FerretDB (a server speaking the MongoDB wire protocol, over SQLite or PostgreSQL) on a free
# loopback port, for the MongoDB store's tests and the HA test. See docs/storage-mongodb.md.
#
#   scripts/ferretdb.sh build              # builds the server into the cache (also done by start)
#   scripts/ferretdb.sh start <state-dir>  # over SQLite in <state-dir>; prints the URI, e.g.
#                                          # mongodb://127.0.0.1:40123/
#   scripts/ferretdb.sh start-pg <state-dir> <postgresql-url>
#                                          # over a running PostgreSQL database (scripts/ha-test.sh);
#                                          # prints the URI
#   scripts/ferretdb.sh stop <state-dir>   # idempotent; safe in a `trap ... EXIT`
#
# The server is our own Go main over FerretDB's embeddable package (scripts/ferretdb/: the
# upstream command panics at start when built with `go install`), built with the machine's Go
# from the Go module proxy into ${XDG_CACHE_HOME:-~/.cache}/bp/ferretdb (outside the clone), and
# rebuilt only when go.mod, go.sum or main.go change. The Go module and build caches are kept
# under the same folder. About 3 minutes on a cold cache; then none.
#
# <state-dir> holds one server: its SQLite files (sqlite/, SQLite only), port, server.pid and
# server.log.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
SRC="$SCRIPT_DIR/ferretdb"
CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"
BIN_DIR="$CACHE/ferretdb"
BIN="$BIN_DIR/bp-ferretdb"
START_TIMEOUT_S=30
STOP_TIMEOUT_S=15

usage() {
  echo "usage: $0 build | start <state-dir> | start-pg <state-dir> <postgresql-url> | stop <state-dir>" >&2
  exit 2
}

# Builds the server unless the cached binary was built from these very sources. The marker is
# written last, so an interrupted build is redone; a lock keeps two concurrent builds apart.
ensure_built() {
  local want
  want="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -d' ' -f1)"
  if [ -x "$BIN" ] && [ -f "$BIN.sources" ] && [ "$(cat "$BIN.sources")" = "$want" ]; then
    return 0
  fi
  mkdir -p "$BIN_DIR"
  (
    flock 9
    if [ -x "$BIN" ] && [ -f "$BIN.sources" ] && [ "$(cat "$BIN.sources")" = "$want" ]; then
      exit 0
    fi
    echo "ferretdb: building the server into $BIN (a few minutes on a cold cache)" >&2
    rm -f "$BIN.sources"
    local started=$SECONDS
    if ! (cd "$SRC" && GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-mod=readonly \
      go build -trimpath -o "$BIN.partial" .) >"$BIN_DIR/build.log" 2>&1; then
      cat "$BIN_DIR/build.log" >&2
      echo "ferretdb: the build failed (Go's output above)" >&2
      exit 1
    fi
    mv "$BIN.partial" "$BIN"
    echo "$want" >"$BIN.sources"
    echo "ferretdb: built in $((SECONDS - started)) s" >&2
  ) 9>"$BIN_DIR/.lock"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

accepts() {
  python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$1" \
    2>/dev/null
}

running() {
  [ -f "$1/server.pid" ] && kill -0 "$(cat "$1/server.pid")" 2>/dev/null
}

# start <state-dir> [<postgresql-url>]: over SQLite in the state dir, or over PostgreSQL.
start() {
  local dir="$1" postgresql_url="${2:-}" port pid backend
  ensure_built
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if running "$dir"; then
    echo "mongodb://127.0.0.1:$(cat "$dir/port")/"
    return 0
  fi
  [ -f "$dir/port" ] || free_port >"$dir/port"
  port="$(cat "$dir/port")"
  backend=(-handler sqlite -sqlite-dir "$dir/sqlite")
  [ -z "$postgresql_url" ] || backend=(-handler postgresql -postgresql-url "$postgresql_url")
  setsid "$BIN" -listen "127.0.0.1:$port" "${backend[@]}" >>"$dir/server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/server.pid"
  for _ in $(seq $((START_TIMEOUT_S * 10))); do
    if accepts "$port"; then
      echo "mongodb://127.0.0.1:$port/"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/server.log" >&2
      echo "ferretdb: the server exited at start (its log above)" >&2
      exit 1
    fi
    sleep 0.1
  done
  tail -n 30 "$dir/server.log" >&2
  echo "ferretdb: no connection accepted on 127.0.0.1:$port within ${START_TIMEOUT_S} s" >&2
  exit 1
}

stop() {
  local dir="$1" pid
  [ -f "$dir/server.pid" ] || return 0
  pid="$(cat "$dir/server.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq $((STOP_TIMEOUT_S * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$dir/server.pid"
}

case "${1:-}" in
  build) [ $# -eq 1 ] || usage; ensure_built ;;
  start) [ $# -eq 2 ] || usage; start "$2" ;;
  start-pg) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
