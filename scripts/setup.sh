#!/usr/bin/env bash
# Installs (if missing) and starts (if absent) what swarmlab needs on a Debian 12 machine:
# Docker Engine in Swarm mode, Redis, iptables/iproute2/iputils, and the local test image
# `labbox:latest`. Idempotent: running it twice changes nothing the second time.
set -euo pipefail
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx nc || need_pkgs+=(busybox-static)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v tc >/dev/null || need_pkgs+=(iproute2)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
command -v chromium >/dev/null || need_pkgs+=(chromium)   # the live page's test (headless)
command -v openssl >/dev/null || need_pkgs+=(openssl)     # certificates of the TLS test (tests/e2e_remote.rs)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)      # the ssh test's own sshd (tests/e2e_remote.rs)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' own services are not started (no sshd on port 22): what is needed is started
  # below, or by the tests. Debian's way: a policy-rc.d that denies, for the install only.
  deny=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && deny=1
  fi
  installed=0
  apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null || installed=$?
  [ -z "$deny" ] || rm -f /usr/sbin/policy-rc.d
  [ "$installed" = 0 ] || { log "apt-get install ${need_pkgs[*]} failed"; exit "$installed"; }
fi

# Docker 20.10 here speaks API 1.41; the newer client in /usr/local/bin needs to be told.
export DOCKER_API_VERSION=1.41
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

if ! $DOCKER info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/swarmlab-dockerd.log)"
  # Swarm would otherwise try a registry pull per task, which cannot succeed offline.
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nohup dockerd >/var/log/swarmlab-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
  $DOCKER info >/dev/null 2>&1 || { log "dockerd did not start: see /var/log/swarmlab-dockerd.log"; exit 1; }
fi

if [ "$($DOCKER info --format '{{.Swarm.LocalNodeState}}')" != "active" ]; then
  log "initialising a single-node swarm"
  $DOCKER swarm init --advertise-addr 127.0.0.1 >/dev/null
fi

# Redis keeps labd's memory (status, which file defined each lab): persist it (AOF, fsync every
# second) so a restart of Redis or of the machine loses nothing. REDIS_PASSWORD, when set, is
# required by the server; give labd and labctl REDIS_URL=redis://:PASSWORD@127.0.0.1:6379.
if ! redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" ping 2>/dev/null | grep -q PONG; then
  log "starting redis-server on 127.0.0.1:6379 (append-only file in /var/lib/swarmlab-redis)"
  mkdir -p /var/lib/swarmlab-redis
  auth=()
  [ -n "${REDIS_PASSWORD:-}" ] && auth=(--requirepass "$REDIS_PASSWORD")
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir /var/lib/swarmlab-redis \
    --appendonly yes --appendfsync everysec --save '' "${auth[@]}" >/dev/null
  for _ in $(seq 1 20); do redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
fi

if ! $DOCKER image inspect labbox:latest >/dev/null 2>&1; then
  log "building the local image labbox:latest (static busybox, no registry needed)"
  ctx=$(mktemp -d)
  mkdir -p "$ctx/bin"
  cp /bin/busybox "$ctx/bin/busybox"
  for app in sh sleep nc ping wget ip ifconfig cat echo ls hostname nslookup top ps date seq true false grep sed awk httpd; do
    ln -sf busybox "$ctx/bin/$app"
  done
  printf 'FROM scratch\nCOPY bin /bin\nENV PATH=/bin\nCMD ["sh"]\n' > "$ctx/Dockerfile"
  $DOCKER build -q -t labbox:latest "$ctx" >/dev/null
  rm -rf "$ctx"
fi
# A real kernel with sch_netem, run as a process, for the netem backend's tests (tests/netem_uml.rs):
# Debian's user-mode Linux, unpacked (not installed) so the host stays as it is.
UML_DIR=${SWARMLAB_UML_DIR:-/var/cache/swarmlab/uml}
if [ ! -x "$UML_DIR/usr/bin/linux.uml" ]; then
  log "fetching Debian's user-mode-linux into $UML_DIR (a netem kernel for the netem backend tests)"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && apt-get download -qq user-mode-linux 2>/dev/null || { apt-get update -qq && apt-get download -qq user-mode-linux; })
  mkdir -p "$UML_DIR"
  dpkg-deb -x "$tmp"/user-mode-linux_*.deb "$UML_DIR"
  rm -rf "$tmp"
fi

log "ready: docker $($DOCKER version --format '{{.Server.Version}}') swarm=active, redis up, labbox:latest present"
