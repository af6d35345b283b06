#!/usr/bin/env bash
# The HA test (issue 18; docs/operations.md, "The HA test"): three bp-server-example processes
# on one MongoDB-protocol database (FerretDB over PostgreSQL) and one Kafka broker, behind nginx
# (deploy/nginx/bp.conf.template, TLS with a certificate made here), under load from
# bp-server-example's example `ha_load`: paying clients with idempotent retries and event-stream
# clients, through nginx. In the middle it kills one server with SIGKILL, then stops PostgreSQL
# for ten seconds; afterwards it checks that nothing acknowledged was lost or done twice, that
# the ledger's invariants hold and that every stream got every event once, in order, and prints
# the failed requests and p99 latency of each phase and how long the killed server's jobs took
# to move. Exits non-zero when a check fails.
#
# Installs what it needs when missing, with apt-get (as root or through sudo): Debian's nginx
# (nginx-light) and PostgreSQL; FerretDB and the Kafka broker come from scripts/ferretdb.sh and
# scripts/kafka-broker.sh (cached under ~/.cache/bp). Everything listens on free loopback ports
# and lives in a temporary folder, removed at the end (kept with BP_HA_KEEP=1).
#
#   scripts/ha-test.sh
#   BP_SERVER_BIN=<binary> BP_HA_LOAD_BIN=<binary>   use these builds instead of asking cargo
#   BP_HA_SIGN_IN=direct   sign the customers in at one replica instead of through nginx
#   BP_HA_KEEP=1           keep the temporary folder (logs, configuration) for a look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

# rustup's cargo, when the shell that runs this has not put it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

# shellcheck source=scripts/steps.sh
source scripts/steps.sh

REPLICAS=3
START_TIMEOUT_S=60
# The source address of nginx's connections to the replicas: the only trusted proxy. Loopback
# has all of 127.0.0.0/8; the clients of the test connect from 127.0.0.1, so a forwarded-for
# header they sent straight to a replica would not be believed.
PROXY_ADDR=127.0.0.2

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- Packages: Debian's nginx and PostgreSQL, when missing. Another apt-get or dpkg may hold the
# lock: apt waits for it up to DPkg::Lock::Timeout, and the whole install is retried.
apt_install() {
  local sudo=() policy_made=0 attempt
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo -n); fi
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
  # Debian's packages start their service when installed, unless a policy says no: the test
  # runs its own nginx and PostgreSQL, never the system's. An existing policy is left as it is.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# scripts/ha-test.sh: no service starts while it installs packages.\nexit 101\n' |
      "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
  fi
  for attempt in 1 2 3; do
    if "${apt[@]}" install -y --no-install-recommends "$@"; then break; fi
    "${apt[@]}" update || true
    if [ "$attempt" -eq 3 ]; then
      [ "$policy_made" -eq 0 ] || "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
      echo "ha-test: cannot install $* with apt-get" >&2
      exit 1
    fi
    sleep 5
  done
  [ "$policy_made" -eq 0 ] || "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
}

step "packages"
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
PG_BIN="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1)"
"$NGINX" -v
"$PG_BIN/postgres" --version

# --- The binaries. `cargo test --workspace --all-features` (the step of scripts/test.sh before
# this one) has built both, the server and the example, with the features that whole build
# unifies: asking for exactly that build again is a no-op that names them, where
# `cargo build -p bp-server-example` would resolve other features and rebuild much of the tree.
step "binaries"
if [ -z "${BP_SERVER_BIN:-}" ] || [ -z "${BP_HA_LOAD_BIN:-}" ]; then
  built="$(cargo test --workspace --all-features --no-run --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
found = {}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or m["profile"]["test"]:
        continue
    kind, name = m["target"]["kind"], m["target"]["name"]
    if name == "bp-server-example" and "bin" in kind:
        found["server"] = m["executable"]
    if name == "ha_load" and "example" in kind:
        found["load"] = m["executable"]
if len(found) != 2:
    sys.exit("cargo built no " + " and no ".join(k for k in ("server", "load") if k not in found))
print(found["server"], found["load"])
')"
  read -r BP_SERVER_BIN BP_HA_LOAD_BIN <<<"$built"
fi
echo "server: $BP_SERVER_BIN"
echo "load:   $BP_HA_LOAD_BIN"

# --- Everything else lives here, and is stopped and removed at the end, whatever happens.
STATE="$(mktemp -d "${TMPDIR:-/tmp}/bp-ha.XXXXXX")"
chmod 755 "$STATE"
PG_DIR="$STATE/postgresql"
PG_USER=()
SERVER_PIDS=()
NGINX_PID=""
cleanup() {
  local status=$?
  set +e
  [ -z "$NGINX_PID" ] || kill -TERM "$NGINX_PID" 2>/dev/null
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  [ -z "$NGINX_PID" ] || wait "$NGINX_PID" 2>/dev/null
  "$ROOT/scripts/kafka-broker.sh" stop "$STATE/kafka"
  "$ROOT/scripts/ferretdb.sh" stop "$STATE/ferretdb"
  "$ROOT/scripts/ferretdb.sh" stop "$STATE/ferretdb-restored"
  [ ! -f "$PG_DIR/data/postmaster.pid" ] ||
    "${PG_USER[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null
  if [ "$status" -ne 0 ]; then
    for log in "$STATE"/replica-*.log "$STATE/nginx/error.log" "$STATE/ferretdb/server.log" "$PG_DIR/server.log"; do
      [ -f "$log" ] && { echo "--- the end of $log" >&2; tail -n 15 "$log" >&2; }
    done
  fi
  if [ "${BP_HA_KEEP:-0}" = 1 ]; then echo "ha-test: kept $STATE" >&2; else rm -rf "$STATE"; fi
  exit "$status"
}
trap cleanup EXIT
# Stopped from outside (a cancelled CI run, Ctrl-C): exit, which runs the cleanup.
trap 'exit 143' TERM
trap 'exit 130' INT

# --- PostgreSQL: a cluster of its own, on a free port. PostgreSQL refuses to run as root, so as
# root its files belong to, and it runs as, Debian's `postgres` user.
step "PostgreSQL"
mkdir -p "$PG_DIR/data"
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres:postgres "$PG_DIR"
  PG_USER=(runuser -u postgres --)
fi
PG_PORT="$(free_port)"
"${PG_USER[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U bp -E UTF8 --no-sync >"$STATE/initdb.log"
"${PG_USER[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -o \
  "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR" start >/dev/null
"${PG_USER[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U bp ferretdb
echo "PostgreSQL on 127.0.0.1:$PG_PORT"
# How ha_load takes the database away and gives it back: an immediate stop (as a crash: every
# connection cut, recovery at the next start) and a start on the same port.
PG_CTL="${PG_USER[*]} $PG_BIN/pg_ctl -D $PG_DIR/data"
export BP_HA_DB_STOP="$PG_CTL -m immediate -w stop"
export BP_HA_DB_START="$PG_CTL -l $PG_DIR/server.log -w -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR' start"

# The backup under load and its restore (docs/operations.md, "Backups and restores"): ha_load
# runs BP_HA_BACKUP while the clients pay (pg_dump of FerretDB's PostgreSQL database: one
# consistent snapshot, taken while the servers write), and afterwards BP_HA_RESTORE, which
# restores it into a new database, starts a second FerretDB on it and prints its URI; ha_load
# opens the ledger there and checks it.
BACKUP="$PG_DIR/backup.dump"
export BP_HA_BACKUP="${PG_USER[*]} $PG_BIN/pg_dump -h 127.0.0.1 -p $PG_PORT -U bp -Fc -f $BACKUP ferretdb"
export BP_HA_RESTORE="${PG_USER[*]} $PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U bp restored && \
${PG_USER[*]} $PG_BIN/pg_restore -h 127.0.0.1 -p $PG_PORT -U bp -d restored $BACKUP && \
$ROOT/scripts/ferretdb.sh start-pg $STATE/ferretdb-restored postgres://bp@127.0.0.1:$PG_PORT/restored"

step "FerretDB on PostgreSQL"
MONGODB_URI="$("$ROOT/scripts/ferretdb.sh" start-pg "$STATE/ferretdb" "postgres://bp@127.0.0.1:$PG_PORT/ferretdb")"
echo "FerretDB on $MONGODB_URI"

step "Kafka broker"
KAFKA="$("$ROOT/scripts/kafka-broker.sh" start "$STATE/kafka")"
echo "Kafka on $KAFKA"

# --- TLS for nginx: a CA of the test's own and a certificate of 127.0.0.1 it signed, which the
# clients trust (BP_HA_CA).
step "TLS certificate"
TLS="$STATE/tls"
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bp HA test CA" \
  -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$TLS/ext"
openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial -days 2 \
  -extfile "$TLS/ext" -out "$TLS/server.pem" 2>/dev/null

# --- The servers: one configuration and one signing key, a port and a metrics port each.
step "servers"
NGINX_PORT="$(free_port)"
PUBLIC_URL="https://127.0.0.1:$NGINX_PORT"
openssl genpkey -algorithm ed25519 -out "$STATE/signing-key.pem"
cat >"$STATE/config.toml" <<EOF
# Written by scripts/ha-test.sh: every replica's configuration (each adds its ports and data
# folder as BP_ variables).
mode = "production"
demo = false

[server]
public_url = "$PUBLIC_URL"
trusted_proxies = ["$PROXY_ADDR/32"]
shutdown_grace_ms = 2000

[storage]
kind = "mongodb"

[storage.mongodb]
uri = "$MONGODB_URI"
database = "bp_ha"

[auth]
signing_key_file = "$STATE/signing-key.pem"
# Cheap password hashes and generous sign-in budgets: the test signs many customers in at once,
# all from 127.0.0.1.
argon2_memory_kib = 8192
argon2_iterations = 1
login_attempts_per_minute = 100000
login_attempts_per_username_per_minute = 1000

[[auth.clients]]
id = "bp-ha-test"
name = "HA test client"
redirect_uris = ["http://127.0.0.1:1/callback"]
token_binding = "dpop"

[sca]
# Every payment of the test is low-value: exempt from SCA however many are made.
low_value_total_max_units = 1000000000
low_value_count_max = 1000000000

[bus]
kind = "kafka"

[bus.kafka]
bootstrap_servers = "$KAFKA"
replication_factor = 1
EOF
export BP_CONFIG="$STATE/config.toml"
REPLICA_SPECS=()
start_replica() {
  local i="$1" port metrics pid
  port="$(free_port)"
  metrics="$(free_port)"
  mkdir -p "$STATE/replica-$i"
  BP_SERVER__LISTEN="127.0.0.1:$port" BP_SERVER__METRICS_LISTEN="127.0.0.1:$metrics" \
    BP_STORAGE__DATA_DIR="$STATE/replica-$i" env -u RUST_LOG \
    "$BP_SERVER_BIN" serve >"$STATE/replica-$i.log" 2>&1 </dev/null &
  pid=$!
  SERVER_PIDS+=("$pid")
  local started=$SECONDS
  until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$STATE/replica-$i.log" >&2
      echo "ha-test: replica $i exited at start (its log above)" >&2
      exit 1
    fi
    if [ $((SECONDS - started)) -ge "$START_TIMEOUT_S" ]; then
      echo "ha-test: replica $i not ready within ${START_TIMEOUT_S} s" >&2
      exit 1
    fi
    sleep 0.2
  done
  REPLICA_SPECS+=("$pid,http://127.0.0.1:$port,http://127.0.0.1:$metrics")
  echo "replica $i: pid $pid, http://127.0.0.1:$port, metrics on $metrics"
}
# One after the other: the first opens the new ledger (its clearing accounts), the others find it.
for i in $(seq 1 "$REPLICAS"); do start_replica "$i"; done

# --- nginx: the template rendered, inside a main configuration of its own (no daemon, its pid,
# logs and temporary files under the state folder), on the port the servers' public URL names.
step "nginx"
mkdir -p "$STATE/nginx/tmp"
UPSTREAMS=""
for spec in "${REPLICA_SPECS[@]}"; do
  IFS=, read -r _ base _ <<<"$spec"
  UPSTREAMS+="server ${base#http://} max_fails=1 fail_timeout=5s;"$'\n    '
done
BP_LISTEN="127.0.0.1:$NGINX_PORT" BP_SERVER_NAME=127.0.0.1 BP_TLS_CERT="$TLS/server.pem" \
  BP_TLS_KEY="$TLS/server.key" BP_UPSTREAM_SERVERS="$UPSTREAMS" BP_PROXY_BIND="$PROXY_ADDR" \
  python3 - "$ROOT/deploy/nginx/bp.conf.template" "$STATE/nginx/bp.conf" <<'EOF'
import os, re, sys
text = open(sys.argv[1]).read()
def value(m):
    name = m.group(1)
    if name not in os.environ:
        sys.exit(f"ha-test: the nginx template names ${{{name}}}, which is not set")
    return os.environ[name].rstrip()
open(sys.argv[2], "w").write(re.sub(r"\$\{(BP_[A-Z_]+)\}", value, text))
EOF
NGX="$STATE/nginx"
cat >"$NGX/nginx.conf" <<EOF
# Written by scripts/ha-test.sh: nginx of the test, not the system's.
daemon off;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    include $NGX/bp.conf;
}
EOF
"$NGINX" -t -q -p "$NGX" -c "$NGX/nginx.conf"
"$NGINX" -p "$NGX" -c "$NGX/nginx.conf" </dev/null &
NGINX_PID=$!
started=$SECONDS
until curl -sf -o /dev/null --cacert "$TLS/ca.pem" "$PUBLIC_URL/livez"; do
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$NGX/error.log" >&2; echo "ha-test: nginx exited" >&2; exit 1; }
  [ $((SECONDS - started)) -lt 20 ] || { echo "ha-test: nginx does not answer on $PUBLIC_URL" >&2; exit 1; }
  sleep 0.2
done
echo "nginx on $PUBLIC_URL, pid $NGINX_PID"

# --- The load and the checks.
step "load, faults and checks (ha_load)"
BP_HA_NGINX="$PUBLIC_URL" BP_HA_CA="$TLS/ca.pem" BP_HA_REPLICAS="$(IFS=';'; echo "${REPLICA_SPECS[*]}")" \
  BP_HA_CLIENT_ID=bp-ha-test BP_HA_REDIRECT_URI="http://127.0.0.1:1/callback" env -u RUST_LOG \
  "$BP_HA_LOAD_BIN"
step
