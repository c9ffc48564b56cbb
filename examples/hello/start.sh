#!/bin/sh
# Start the hello app: write its pages, say so on stdout, then serve /www with busybox httpd.
# The platform sets PORT (default 5000), PAAS_RELEASE and PAAS_INSTANCE_ID; GREETING is config.
set -eu

port="${PORT:-5000}"
release="v${PAAS_RELEASE:-0}"
instance="${PAAS_INSTANCE_ID:-$(hostname)}"

mkdir -p /www
{
  printf 'hello from %s instance %s\n' "$release" "$instance"
  if [ -n "${GREETING:-}" ]; then printf '%s\n' "$GREETING"; fi
} > /www/index.html
printf 'ok\n' > /www/health

printf 'hello %s instance %s listening on port %s\n' "$release" "$instance" "$port"

# httpd as PID 1 would ignore SIGTERM (no handler, and PID 1 gets no default actions), making
# every stop wait for the kill timeout; so this shell stays PID 1 and passes the signal on.
httpd -f -p "$port" -h /www &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; exit 0' TERM INT
wait "$pid"
