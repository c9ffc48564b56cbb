#!/usr/bin/env bash
# Install and start everything the platform and its tests need on a Debian 12 host (as root).
# Idempotent and quick when everything is already there. Used by `make demo`, `make test`,
# CI (.ci/run) and the Vagrant provisioner, so one script keeps every machine alike.
#
#   - Debian packages: docker.io, haproxy, busybox-static, git, wrk and hey (load generators),
#     vagrant (to validate the Vagrantfile), docker-registry (images on many hosts), mmdebstrap
#     (the language stacks' images, made from Debian's packages: paas.builder.stackimages),
#     prometheus (the cluster's monitoring; the cluster runs its own, on its own port, so
#     the package's own service is disabled where systemd runs), chromium (the dashboard's
#     browser tests drive it headless, through playwright's executable_path), pebble (an ACME
#     test server and its DNS, which the HTTPS tests order certificates from)
#   - Consul 1.8 from Debian bullseye (not in bookworm): downloaded through an extra apt
#     sources list that reuses the mirror already in this machine's apt sources, then
#     unpacked into .local/bin/ (a consul already on PATH wins)
#   - dockerd started in the background when its socket does not answer
#   - the Python virtualenv .venv with this package and pinned dependencies
#   - the local stack image paas/busybox:latest
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL="$ROOT/.local"
mkdir -p "$LOCAL/bin" "$LOCAL/log"
log() { printf 'setup: %s\n' "$*"; }

need_pkgs=()
for pair in docker.io:/usr/sbin/dockerd haproxy:/usr/sbin/haproxy busybox-static:/bin/busybox \
            git:/usr/bin/git wrk:/usr/bin/wrk hey:/usr/bin/hey vagrant:/usr/bin/vagrant \
            docker-registry:/usr/bin/docker-registry mmdebstrap:/usr/bin/mmdebstrap \
            prometheus:/usr/bin/prometheus chromium:/usr/bin/chromium pebble:/usr/bin/pebble; do
  pkg=${pair%%:*}; file=${pair#*:}
  if [ "$pkg" = busybox-static ]; then
    dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=("$pkg")
  elif [ ! -e "$file" ]; then
    need_pkgs+=("$pkg")
  fi
done
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null 2>&1
fi
if [ -d /run/systemd/system ] && systemctl is-enabled prometheus >/dev/null 2>&1; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# --- Consul -----------------------------------------------------------------------------
mirror_uri() {
  # The first Debian mirror URI from this machine's apt sources (deb822 or one-line format).
  local uri=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  printf '%s' "${uri%/}"
}
if ! command -v consul >/dev/null 2>&1 && [ ! -x "$LOCAL/bin/consul" ]; then
  uri=$(mirror_uri)
  [ -n "$uri" ] || { echo "setup: no Debian mirror found in the apt sources" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb $uri bullseye main" > "$work/sources.list"
  aptopts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root -q)
  log "downloading consul from Debian bullseye"
  apt-get "${aptopts[@]}" update >/dev/null
  (cd "$work" && apt-get "${aptopts[@]}" download consul >/dev/null 2>&1)
  dpkg -x "$work"/consul_*.deb "$work/x"
  install -m 0755 "$work/x/usr/bin/consul" "$LOCAL/bin/consul"
  rm -rf "$work"; trap - EXIT
fi

# --- Docker engine ------------------------------------------------------------------------
if ! timeout 5 docker info >/dev/null 2>&1; then
  log "starting dockerd"
  nohup dockerd >"$LOCAL/log/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    timeout 5 docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  timeout 5 docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see $LOCAL/log/dockerd.log" >&2; exit 1; }
fi

# --- Python environment -----------------------------------------------------------------
stamp="$ROOT/.venv/.installed"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  log "creating .venv"
  python3 -m venv "$ROOT/.venv"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
  log "installing Python dependencies (pinned by constraints.txt)"
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -c "$ROOT/constraints.txt" -e "$ROOT[test]"
  touch "$stamp"
fi

# --- Stack images -----------------------------------------------------------------------
"$ROOT/stacks/busybox/build.sh"
log "ready"
