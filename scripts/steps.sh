# Sourced by the check scripts (scripts/security-checks.sh, scripts/deploy-checks.sh,
# scripts/web-test.sh): timed steps, and checks that all run before the script fails.
#   step [name]               says how long the previous step took, then starts the next one
#   check <name> <command…>   runs a check; if it fails, says so and adds its name to `failed`
# CHECKS_KIND names the checks in the failure message ("security", "deployment", …).

step_name=""
step_started=$SECONDS
step() {
  if [ -n "$step_name" ]; then echo "   ($step_name: $((SECONDS - step_started)) s)"; fi
  step_name="${1:-}"
  step_started=$SECONDS
  if [ -n "$step_name" ]; then echo "-- $step_name"; fi
}

failed=()
check() {
  local name="$1"
  shift
  if ! "$@"; then
    echo "${CHECKS_KIND:-} check FAILED: $name" >&2
    failed+=("$name")
  fi
}
