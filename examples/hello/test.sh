#!/bin/sh
# Integration test of the hello app. The platform runs it from the app's own image against the
# control instance of a new release (which gets no traffic) before rolling the release out:
# PAAS_TARGET_URL is that instance's base URL, e.g. http://127.0.0.2:32768. Exits non-zero on
# the first failed check.
set -u

base="${PAAS_TARGET_URL:?PAAS_TARGET_URL must name the instance under test}"
base="${base%/}"

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# busybox wget's own -T option crashes in Debian's static build, so `timeout` bounds each call.
get() {
  timeout 5 wget -q -O - "$1"
}

page=$(get "$base/") || fail "GET $base/ did not answer 200"
case "$page" in
  *"hello from v"*) ;;
  *) fail "GET $base/ answered '$page', not the hello page" ;;
esac
# When the test knows its release, the instance under test must be serving that release.
if [ -n "${PAAS_RELEASE:-}" ]; then
  case "$page" in
    *"hello from v$PAAS_RELEASE "*) ;;
    *) fail "GET $base/ answered '$page', not release v$PAAS_RELEASE" ;;
  esac
fi
get "$base/health" >/dev/null || fail "GET $base/health did not answer 200"

printf 'PASS: / and /health answer at %s\n' "$base"
