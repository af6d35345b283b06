#!/usr/bin/env bash
# The security checks of bp, a section of scripts/test.sh (docs/security.md, "Security checks",
# says what each proves and what is not checked here):
#   1. cargo-deny: licences, banned and duplicate crates, crate sources (deny.toml), every feature;
#   2. a CycloneDX SBOM of the server binary's dependency tree, checked for shape;
#   3. semgrep with the project's own rules (.semgrep/): their tests, their scope, then the code;
#   4. gitleaks (.gitleaks.toml): a self-test on made-up secrets, every commit, the tracked files.
# Every check runs, and the script fails at the end if any failed.
#
# The tools are pinned and installed on first use, from the package registries only, under
# ${XDG_CACHE_HOME:-$HOME/.cache}/bp (never into the clone), and reused by later runs:
#   cargo-tools/<crate>-<version>/bin  cargo install --locked (cargo-deny, cargo-cyclonedx)
#   venv-semgrep-<version>             pip, in a virtual environment
#   go-tools/gitleaks-<version>/bin    go install, from the Go module proxy
# A cold install costs about 9 minutes of building on two busy cores (the two cargo installs,
# run side by side, dominate); a warm run about 30 seconds.
#
#   scripts/security-checks.sh    every check (needs cargo, python3 and go)
#   BP_SBOM_DIR=<dir>             where the SBOM goes (default: <cargo target dir>/sbom)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

CARGO_DENY_VERSION="0.20.2"
CARGO_CYCLONEDX_VERSION="0.5.9"
SEMGREP_VERSION="1.187.0"
GITLEAKS_VERSION="8.30.1"

BP_CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"
mkdir -p "$BP_CACHE"

# rustup's cargo, when the shell that runs this has not put it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

# The Go toolchain's usual place, likewise (gitleaks is built with it).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/bp-security.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

CHECKS_KIND=security
# shellcheck source=scripts/steps.sh
source scripts/steps.sh

# --- Tools. Each is installed into a folder of its own named by its version, made complete
# before it is moved into place, so that an interrupted install is redone, never half-used.
# Missing tools are installed side by side (the cargo builds are the long part).
CARGO_DENY="$BP_CACHE/cargo-tools/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
CARGO_CYCLONEDX="$BP_CACHE/cargo-tools/cargo-cyclonedx-$CARGO_CYCLONEDX_VERSION/bin/cargo-cyclonedx"
SEMGREP_VENV="$BP_CACHE/venv-semgrep-$SEMGREP_VERSION"
SEMGREP="$SEMGREP_VENV/bin/semgrep"
GITLEAKS="$BP_CACHE/go-tools/gitleaks-$GITLEAKS_VERSION/bin/gitleaks"

install_cargo_tool() { # install_cargo_tool <crate> <version>
  local root="$BP_CACHE/cargo-tools/$1-$2"
  rm -rf "$root.partial"
  # Outside the clone, so that its .cargo/config.toml does not apply; in cargo's own temporary
  # target dir, not the workspace's.
  (cd "$BP_CACHE" && env -u CARGO_TARGET_DIR cargo install --locked --quiet --root "$root.partial" "$1@$2")
  rm -rf "$root" && mv "$root.partial" "$root"
}

install_semgrep() {
  # A virtual environment is not relocatable: it is made in place, and marked complete last.
  rm -rf "$SEMGREP_VENV"
  python3 -m venv "$SEMGREP_VENV"
  "$SEMGREP_VENV/bin/pip" install --quiet --disable-pip-version-check "semgrep==$SEMGREP_VERSION"
  touch "$SEMGREP_VENV/.complete"
}

install_gitleaks() {
  local root="$BP_CACHE/go-tools/gitleaks-$GITLEAKS_VERSION"
  rm -rf "$root.partial"
  (cd "$BP_CACHE" && GOBIN="$root.partial/bin" GOFLAGS=-buildvcs=false go install \
    -ldflags "-X=github.com/zricethezav/gitleaks/v8/version.Version=v$GITLEAKS_VERSION" \
    "github.com/zricethezav/gitleaks/v8@v$GITLEAKS_VERSION")
  rm -rf "$root" && mv "$root.partial" "$root"
}

step "tools (cargo-deny $CARGO_DENY_VERSION, cargo-cyclonedx $CARGO_CYCLONEDX_VERSION, semgrep $SEMGREP_VERSION, gitleaks $GITLEAKS_VERSION)"
installs=()
if [ ! -x "$CARGO_DENY" ]; then installs+=(cargo-deny); fi
if [ ! -x "$CARGO_CYCLONEDX" ]; then installs+=(cargo-cyclonedx); fi
if [ ! -f "$SEMGREP_VENV/.complete" ]; then installs+=(semgrep); fi
if [ ! -x "$GITLEAKS" ]; then installs+=(gitleaks); fi
if [ ${#installs[@]} -gt 0 ]; then
  echo "installing under $BP_CACHE: ${installs[*]}"
  pids=()
  for tool in "${installs[@]}"; do
    case "$tool" in
      cargo-deny) install_cargo_tool cargo-deny "$CARGO_DENY_VERSION" ;;
      cargo-cyclonedx) install_cargo_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION" ;;
      semgrep) install_semgrep ;;
      gitleaks) install_gitleaks ;;
    esac >"$TMP/install-$tool.log" 2>&1 &
    pids+=($!)
  done
  install_failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "installing ${installs[$i]} failed:" >&2
      cat "$TMP/install-${installs[$i]}.log" >&2
      install_failed=1
    fi
  done
  if [ "$install_failed" -ne 0 ]; then exit 1; fi
fi

# --- 1. cargo-deny. Offline: the advisory database (a git clone of RustSec) cannot be fetched on
# these machines, so `advisories` is not run here (docs/security.md says how to run it). Its
# `cargo metadata` resolves every platform's dependencies (wasm, Android, Windows), which a
# build on this host never downloads: `cargo fetch` puts them in cargo's cache first (from the
# package registry; a no-op once they are there).
step "cargo deny check licenses bans sources (every feature; deny.toml)"
deny() {
  cargo fetch --locked --quiet && "$CARGO_DENY" --locked --offline --color never check --show-stats licenses bans sources
}
check "cargo-deny" deny

# --- 2. The SBOM of the server binary: its normal and build dependencies with its default
# features, for Linux x86_64. cargo-cyclonedx writes next to the manifest, so it runs on a copy
# of the tracked files; the result goes to the target dir.
step "SBOM (CycloneDX) of the bp-server-example binary"
sbom() {
  # `set -e` does not apply inside a function that `check` calls in a condition: each step says
  # itself that it failed.
  local target_dir copy out
  target_dir="$(cargo metadata --format-version 1 --no-deps --offline |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" || return 1
  out="${BP_SBOM_DIR:-$target_dir/sbom}/bp-server-example.cdx.json"
  copy="$TMP/sbom-workspace"
  mkdir -p "$copy" || return 1
  git ls-files -z | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$copy" || return 1
  (cd "$copy" && SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct)" CARGO_NET_OFFLINE=true \
    "$CARGO_CYCLONEDX" cyclonedx --manifest-path bp-server-example/Cargo.toml --format json --spec-version 1.5 \
    --describe binaries --target x86_64-unknown-linux-gnu --quiet) || return 1
  python3 scripts/check-sbom.py "$copy/bp-server-example/bp-server-example_bin.cdx.json" "$copy" "$ROOT" "$out"
}
check "SBOM" sbom

# --- 3. semgrep, offline: local rules only, no metrics, no version check. First the rules'
# own tests, then that each rule's paths reach the code it is meant for, then the code.
SEMGREP_FLAGS=(--metrics=off --disable-version-check --quiet)
step "semgrep: rule tests (.semgrep/*.rs)"
semgrep_tests() {
  local rule id ok=0
  for rule in .semgrep/*.yaml; do
    id="$(basename "$rule" .yaml)"
    # A rule without a test that shows it firing could match nothing and pass for ever.
    if ! grep -q "ruleid: $id\$" ".semgrep/$id.rs" 2>/dev/null; then
      echo "semgrep rule $id has no test: .semgrep/$id.rs with a '// ruleid: $id' line" >&2
      ok=1
    fi
  done
  # semgrep --test skips hidden folders given as targets, hence the cd.
  (cd .semgrep && "$SEMGREP" --test "${SEMGREP_FLAGS[@]}" .) || ok=1
  return "$ok"
}
check "semgrep rule tests" semgrep_tests

step "semgrep: each rule reaches its code (its test file at the path in metadata.probe)"
semgrep_scope() {
  local rule id probe probes="$TMP/semgrep-probes"
  mkdir -p "$probes"
  for rule in .semgrep/*.yaml; do
    id="$(basename "$rule" .yaml)"
    probe="$(sed -n 's/^ *probe: *//p' "$rule")"
    if [ -z "$probe" ]; then
      echo "semgrep rule $id has no metadata.probe (a path its rule must cover)" >&2
      return 1
    fi
    mkdir -p "$probes/$(dirname "$probe")"
    cp ".semgrep/$id.rs" "$probes/$probe"
    echo "$id $probe $(grep -c "ruleid: $id\$" ".semgrep/$id.rs")" >>"$probes/expected.txt"
  done
  (cd "$probes" && "$SEMGREP" scan "${SEMGREP_FLAGS[@]}" --config "$ROOT/.semgrep" --json --output findings.json .) &&
    python3 - "$probes" <<'EOF'
import json, pathlib, sys
probes = pathlib.Path(sys.argv[1])
found = json.loads((probes / "findings.json").read_text())["results"]
bad = 0
for line in (probes / "expected.txt").read_text().splitlines():
    rule, path, expected = line.split()
    got = len({r["start"]["line"] for r in found if r["check_id"].endswith("." + rule) and r["path"] == path})
    if got != int(expected):
        print(f"semgrep rule {rule}: {got} findings in its test file at {path}, expected {expected}: "
              "its paths do not cover the code it is meant for", file=sys.stderr)
        bad = 1
sys.exit(bad)
EOF
}
check "semgrep rule scope" semgrep_scope

step "semgrep: the project's rules on the code"
semgrep_code() {
  "$SEMGREP" scan "${SEMGREP_FLAGS[@]}" --error --config .semgrep . && echo "no findings"
}
check "semgrep" semgrep_code

# --- 4. gitleaks. First a self-test: made-up secrets of each kind the config must catch, in a
# temporary folder and a temporary git repository, scanned with the same config, must all be
# reported. They are made here from a fixed seed, so that this file itself holds none.
step "gitleaks: self-test on made-up secrets"
gitleaks_self_test() {
  local fakes="$TMP/gitleaks-fakes" rc=0
  mkdir -p "$fakes/data"
  python3 - "$fakes/leaked.txt" <<'EOF'
import base64, random, sys
r = random.Random(6238)
def b32(n):
    return "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(n))
pem = "PRIVATE" + " KEY-----"
lines = [
    f"aws_access_key_id = AKIA{b32(16)}",
    "-----BEGIN " + pem,
    base64.b64encode(bytes(r.randrange(256) for _ in range(48))).decode(),
    "-----END " + pem,
    f"scan this: otpauth://totp/bp:ada?secret={b32(32)}&issuer=bp",
    f"  username: ada    password: {b32(12).lower()}  totp secret: {b32(32)}",
]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
EOF
  printf 'not a key, but where the server keeps its key\n' >"$fakes/data/signing-key.pem"
  "$GITLEAKS" dir --no-banner --no-color --log-level error --redact --exit-code 0 --config .gitleaks.toml \
    --report-format json --report-path "$TMP/gitleaks-fakes.json" "$fakes"
  git -C "$fakes" init --quiet && git -C "$fakes" add -A &&
    git -C "$fakes" -c user.name=test -c user.email=test@example.invalid commit --quiet -m fakes
  "$GITLEAKS" git --no-banner --no-color --log-level error --redact --exit-code 0 --config .gitleaks.toml \
    --report-format json --report-path "$TMP/gitleaks-fakes-git.json" "$fakes"
  python3 - "$TMP/gitleaks-fakes.json" "$TMP/gitleaks-fakes-git.json" <<'EOF' || rc=1
import json, sys
expected = {"aws-access-token", "private-key", "bp-otpauth-totp-secret", "bp-totp-secret", "bp-server-data-file"}
bad = 0
for report, mode in zip(sys.argv[1:], ["dir", "git"]):
    got = {f["RuleID"] for f in json.load(open(report))}
    if expected - got:
        print(f"gitleaks ({mode}) missed made-up secrets: {sorted(expected - got)}", file=sys.stderr)
        bad = 1
sys.exit(bad)
EOF
  return "$rc"
}
check "gitleaks self-test" gitleaks_self_test

step "gitleaks: every commit of the repository"
check "gitleaks (history)" "$GITLEAKS" git --no-banner --no-color --verbose --redact --config .gitleaks.toml .

step "gitleaks: the tracked files as they are now (committed or not)"
gitleaks_tracked() {
  local copy="$TMP/gitleaks-tracked"
  mkdir -p "$copy" || return 1
  git ls-files -z | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$copy" || return 1
  (cd "$copy" && "$GITLEAKS" dir --no-banner --no-color --verbose --redact --config "$ROOT/.gitleaks.toml" .)
}
check "gitleaks (tracked files)" gitleaks_tracked
step

if [ ${#failed[@]} -gt 0 ]; then
  echo "security checks failed: ${failed[*]}" >&2
  exit 1
fi
echo "security checks passed: cargo-deny, SBOM, semgrep (rules tested), gitleaks (self-tested)"
