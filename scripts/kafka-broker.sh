#!/usr/bin/env bash
# Runs a real, single-node Apache Kafka broker (KRaft: broker and controller in one JVM) on free
# loopback ports, for the test suite, fault tests and benchmarks. See docs/kafka-broker.md.
#
#   scripts/kafka-broker.sh start <state-dir>   # prints the bootstrap address, e.g. 127.0.0.1:40123
#   scripts/kafka-broker.sh stop <state-dir>    # idempotent; safe in a `trap ... EXIT`
#
# The broker's jars come from Maven Central through scripts/kafka/pom.xml, once, into
# ${XDG_CACHE_HOME:-~/.cache}/bp/kafka-<version>/libs (outside the clone). Needs Java 17+, Maven and
# Python 3.
#
# <state-dir> holds everything of one broker: its ports (chosen on the first start and kept, so
# clients can reconnect after a stop/start), server.properties, the data (log.dirs), broker.pid and
# broker.log. `start` on a state dir that was started before reuses its ports and data; `start` on a
# running broker just prints its address.
set -euo pipefail

KAFKA_VERSION="4.4.0" # keep in step with kafka.version in scripts/kafka/pom.xml
SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"
CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp/kafka-$KAFKA_VERSION"
LIBS="$CACHE/libs"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
START_TIMEOUT_S=90
STOP_TIMEOUT_S=30

usage() {
  echo "usage: $0 start|stop <state-dir>" >&2
  exit 2
}

# Fetches the jars unless a complete copy made from this very pom.xml is cached. The marker file is
# written last, so an interrupted download is redone; a lock keeps two concurrent starts apart.
ensure_jars() {
  local want
  want="$KAFKA_VERSION $(sha256sum "$POM" | cut -d' ' -f1)"
  if [ -f "$CACHE/libs.complete" ] && [ "$(cat "$CACHE/libs.complete")" = "$want" ]; then
    return 0
  fi
  mkdir -p "$CACHE"
  (
    flock 9
    if [ -f "$CACHE/libs.complete" ] && [ "$(cat "$CACHE/libs.complete")" = "$want" ]; then
      exit 0
    fi
    echo "kafka-broker: fetching Apache Kafka $KAFKA_VERSION jars into $LIBS" >&2
    rm -f "$CACHE/libs.complete"
    rm -rf "$LIBS" "$LIBS.partial"
    if ! mvn -q -B -f "$POM" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS.partial" >"$CACHE/mvn.log" 2>&1; then
      cat "$CACHE/mvn.log" >&2
      echo "kafka-broker: fetching the jars failed (Maven's output above)" >&2
      exit 1
    fi
    mv "$LIBS.partial" "$LIBS"
    echo "$want" >"$CACHE/libs.complete"
  ) 9>"$CACHE/.lock"
}

# Two distinct free loopback ports, as "broker controller".
free_ports() {
  python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# True once the broker answers a Metadata request listing itself (Kafka protocol, Metadata v1).
serves_metadata() {
  python3 - "$1" <<'EOF'
import socket, struct, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
        client = b"bp-kafka-broker.sh"
        # header: api_key=3 (Metadata), api_version=1, correlation_id, client_id; body: topics=null
        req = struct.pack(">hhih", 3, 1, 7, len(client)) + client + struct.pack(">i", -1)
        s.sendall(struct.pack(">i", len(req)) + req)
        def read(n):
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                if not chunk:
                    raise EOFError
                buf += chunk
            return buf
        (size,) = struct.unpack(">i", read(4))
        body = read(size)
        correlation_id, brokers = struct.unpack(">ii", body[:8])
        sys.exit(0 if correlation_id == 7 and brokers >= 1 else 1)
except (OSError, EOFError, struct.error):
    sys.exit(1)
EOF
}

# True while <pid> is a live (not zombie) Kafka broker of this state dir.
broker_alive() {
  local pid="$1" state="$2"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X)" != "Z" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $state/server.properties"
}

write_config() {
  local state="$1" port="$2" cport="$3"
  cat >"$state/server.properties" <<EOF
# Written by scripts/kafka-broker.sh: a single-node KRaft test broker on loopback.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@127.0.0.1:$cport
log.dirs=$state/data
# One replica of everything; several partitions, so per-key ordering is really exercised.
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fast: no delay before the first consumer group rebalance, small thread pools for 2 cores.
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
# After a SIGKILL the restarted broker cannot register until its old session expires (default 9 s).
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
EOF
  cat >"$state/log4j2.properties" <<EOF
# Written by scripts/kafka-broker.sh: warnings to broker.log, plus the broker's start line.
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=$state/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=FILE
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
EOF
}

start() {
  local state="$1" port cport pid began
  mkdir -p "$state"
  state="$(cd "$state" && pwd)"
  if [ -f "$state/ports" ]; then
    read -r port cport <"$state/ports"
    pid="$(cat "$state/broker.pid" 2>/dev/null || true)"
    if broker_alive "$pid" "$state"; then
      echo "127.0.0.1:$port"
      return 0
    fi
  fi
  ensure_jars
  if [ ! -f "$state/ports" ]; then
    free_ports >"$state/ports.new"
    mv "$state/ports.new" "$state/ports"
  fi
  read -r port cport <"$state/ports"
  write_config "$state" "$port" "$cport"

  if [ ! -f "$state/data/meta.properties" ]; then
    local cluster_id
    # 16 random bytes, base64url, as Kafka's own `random-uuid` makes them, and like it never
    # starting with '-' (1 in 64 does): kafka-storage's argument parser takes such a value for an
    # option and refuses to format ("--cluster-id/-t: expected one argument").
    cluster_id="$(python3 -c '
import base64, os
while (c := base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")).startswith("-"):
    pass
print(c)')"
    "$JAVA" -Dlog4j2.configurationFile="$state/log4j2.properties" -cp "$LIBS/*" kafka.tools.StorageTool \
      format -t "$cluster_id" -c "$state/server.properties" >>"$state/broker.log" 2>&1 || {
      echo "kafka-broker: formatting $state/data failed:" >&2
      tail -n 30 "$state/broker.log" >&2 || true
      return 1
    }
  fi

  began=$(date +%s)
  # All three streams away from the caller, so `$(kafka-broker.sh start ...)` does not wait for it.
  "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" -Dkafka.logs.dir="$state" \
    -cp "$LIBS/*" kafka.Kafka "$state/server.properties" </dev/null >>"$state/broker.out" 2>&1 &
  pid=$!
  echo "$pid" >"$state/broker.pid"

  until serves_metadata "$port"; do
    if ! broker_alive "$pid" "$state"; then
      echo "kafka-broker: the broker exited while starting; the end of its logs:" >&2
      tail -n 40 "$state/broker.log" "$state/broker.out" >&2 || true
      return 1
    fi
    if [ $(($(date +%s) - began)) -ge "$START_TIMEOUT_S" ]; then
      echo "kafka-broker: not serving on 127.0.0.1:$port after ${START_TIMEOUT_S}s; the end of its logs:" >&2
      tail -n 40 "$state/broker.log" "$state/broker.out" >&2 || true
      stop "$state"
      return 1
    fi
    sleep 0.2
  done
  echo "127.0.0.1:$port"
}

stop() {
  local state="$1" pid waited=0
  [ -d "$state" ] || return 0
  state="$(cd "$state" && pwd)"
  pid="$(cat "$state/broker.pid" 2>/dev/null || true)"
  if broker_alive "$pid" "$state"; then
    kill -TERM "$pid" 2>/dev/null || true
    while broker_alive "$pid" "$state" && [ "$waited" -lt $((STOP_TIMEOUT_S * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if broker_alive "$pid" "$state"; then
      echo "kafka-broker: no exit ${STOP_TIMEOUT_S}s after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while broker_alive "$pid" "$state"; do sleep 0.1; done
    fi
  fi
  rm -f "$state/broker.pid"
}

[ $# -eq 2 ] || usage
case "$1" in
start) start "$2" ;;
stop) stop "$2" ;;
*) usage ;;
esac
