#!/usr/bin/env bash
# The web app's checks, the last step of scripts/test.sh: a type check of its JavaScript (tsc
# over the JSDoc, bp-server-example/web/jsconfig.json) and the end-to-end tests
# (bp-server-example/web/e2e/*.test.mjs, node:test) that drive the real server binary from
# headless Chromium.
#
# Needs Node.js 20+ and npm, and installs what else it needs without downloading anything but
# packages: Debian's `chromium` (apt-get, when /usr/bin/chromium is missing; as root or through
# sudo), and the npm packages pinned in bp-server-example/web/e2e/package-lock.json (typescript,
# playwright-core, axe-core) into ~/.cache/bp/web-node/<hash of package.json and the lock file>, linked as
# bp-server-example/web/e2e/node_modules. Playwright never downloads a browser here.
#
#   scripts/web-test.sh     type check, build the server binary, run every e2e test
#   BP_SERVER_BIN=<binary>  test that binary instead of asking cargo for one (which, outside
#                           scripts/test.sh, builds every test of the workspace first)
#   BP_E2E_OUT=<dir>        where tests put screenshots (default: <cargo target dir>/web-e2e)
set -euo pipefail
cd "$(dirname "$0")/.."

WEB=bp-server-example/web
E2E="$WEB/e2e"
CHROMIUM=/usr/bin/chromium
BP_CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/bp"

# rustup's cargo, when the shell that runs this has not put it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
fi

# shellcheck source=scripts/steps.sh
source scripts/steps.sh

# The app and its tests must be there: a check of nothing would pass.
shopt -s nullglob globstar
APP_JS=("$WEB"/js/**/*.js)
TESTS=("$E2E"/*.test.mjs)
shopt -u globstar
if [ ${#APP_JS[@]} -eq 0 ] || [ ${#TESTS[@]} -eq 0 ]; then
  echo "web-test: no web app to check: $WEB/js/**/*.js and $E2E/*.test.mjs must exist" >&2
  exit 1
fi

# --- Chromium, from Debian. Another apt-get or dpkg may hold the lock (an unattended upgrade, a
# parallel install): apt waits for it up to DPkg::Lock::Timeout, and the whole install is retried.
step "Chromium"
if [ ! -x "$CHROMIUM" ]; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
  APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
  for attempt in 1 2 3; do
    if "${APT[@]}" install -y --no-install-recommends chromium; then break; fi
    # The package lists may be stale or missing (a fresh image): refresh them, then try again.
    "${APT[@]}" update || true
    if [ "$attempt" -eq 3 ]; then
      echo "web-test: cannot install Debian's chromium with apt-get" >&2
      exit 1
    fi
    sleep 5
  done
fi
# (Debian's launcher script prints a harmless `[: … unexpected operator` when /dev/shm is mounted
# twice, as in some containers.)
"$CHROMIUM" --version 2>/dev/null || { echo "web-test: $CHROMIUM does not run" >&2; "$CHROMIUM" --version; exit 1; }

# --- Node packages, installed once per lock file outside the clone. `npm ci` into a temp folder
# that is renamed into place when complete, so an interrupted install is never reused.
step "npm packages"
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "web-test: needs Node.js 20+ and npm ($tool is missing)" >&2; exit 1; }
done
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "web-test: needs Node.js 20+, found $(node --version)" >&2
  exit 1
fi
KEY="$(cat "$E2E/package.json" "$E2E/package-lock.json" | sha256sum | cut -c1-16)-$(uname -m)"
NODE_CACHE="$BP_CACHE/web-node/$KEY"
if [ ! -d "$NODE_CACHE/node_modules" ]; then
  mkdir -p "$BP_CACHE/web-node"
  # Interrupted installs of earlier runs.
  find "$BP_CACHE/web-node" -mindepth 1 -maxdepth 1 -name '.staging.*' -mmin +60 -exec rm -rf {} +
  staging="$(mktemp -d "$BP_CACHE/web-node/.staging.XXXXXX")"
  cp "$E2E/package.json" "$E2E/package-lock.json" "$staging/"
  # No install scripts: none of the packages needs one, and playwright's would fetch browsers.
  (cd "$staging" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  # Another run may have finished the same install meanwhile: keep theirs.
  mv -T "$staging" "$NODE_CACHE" 2>/dev/null || rm -rf "$staging"
fi
# This install was used now; the installs of other lock files unused for 14 days go (44 MB each).
touch "$NODE_CACHE"
find "$BP_CACHE/web-node" -mindepth 1 -maxdepth 1 -type d ! -name '.staging.*' ! -path "$NODE_CACHE" -mtime +14 \
  -exec rm -rf {} +
# The tests import playwright-core from bp-server-example/web/e2e: node resolves it through this
# link (gitignored). A real folder there (a local `npm install`) is replaced.
if [ -e "$E2E/node_modules" ] && [ ! -L "$E2E/node_modules" ]; then rm -rf "$E2E/node_modules"; fi
ln -sfn "$NODE_CACHE/node_modules" "$E2E/node_modules"
echo "typescript $(node -p "require('./$E2E/node_modules/typescript/package.json').version"), playwright-core $(node -p "require('./$E2E/node_modules/playwright-core/package.json').version") from $NODE_CACHE"

# --- The type check: the app's plain JavaScript modules, with their JSDoc types, under `strict`.
step "type check"
"$E2E/node_modules/.bin/tsc" -p "$WEB/jsconfig.json"

# --- The server binary. `cargo test --workspace --all-features` (the step before this one in
# scripts/test.sh) has built it with the features that whole build unifies; asking for exactly
# that build again is a no-op that names the binary, where `cargo build -p bp-server-example`
# would resolve other features and rebuild much of the tree.
step "server binary"
if [ -z "${BP_SERVER_BIN:-}" ]; then
  BP_SERVER_BIN="$(cargo test --workspace --all-features --no-run --message-format=json-render-diagnostics |
    node -e '
      let found = "";
      require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
        const m = JSON.parse(line);
        if (m.reason === "compiler-artifact" && m.executable && m.target.name === "bp-server-example"
            && m.target.kind.includes("bin") && !m.profile.test) found = m.executable;
      }).on("close", () => { if (!found) process.exit(1); console.log(found); });
    ')" || { echo "web-test: cargo did not build the bp-server-example binary" >&2; exit 1; }
fi
export BP_SERVER_BIN
echo "$BP_SERVER_BIN"

# --- The end-to-end tests, one file at a time (each starts its own server and browser).
step "end-to-end tests"
if [ -z "${BP_E2E_OUT:-}" ]; then
  BP_E2E_OUT="$(cargo metadata --format-version 1 --no-deps |
    node -p 'JSON.parse(require("fs").readFileSync(0, "utf8")).target_directory')/web-e2e"
  rm -rf "$BP_E2E_OUT" # the last run's screenshots
fi
mkdir -p "$BP_E2E_OUT"
export BP_E2E_OUT BP_CHROMIUM="$CHROMIUM"
echo "${TESTS[*]} (screenshots: $BP_E2E_OUT)"
node --test --test-concurrency=1 --test-reporter=spec "${TESTS[@]}"
step
