#!/usr/bin/env bash
# Runs this machine's Swarm on a newer Docker Engine than Debian 12's 20.10, to check labd
# against the API most users have (Debian 13's docker.io, 26.1: API 1.45):
#   scripts/newer-engine.sh up     # stops the host's dockerd, starts the newer one in its place
#   scripts/newer-engine.sh down   # stops it, starts Debian 12's dockerd again (scripts/setup.sh)
# The newer dockerd is unpacked from Debian 13's package (checked against the archive's SHA256),
# not installed: it keeps its own data root (/var/lib/docker-newer), so the 20.10 daemon's
# swarm, images and volumes are left as they were. It uses the host's containerd and runc
# (1.6 and 1.1, which Engine 26 supports). Only for a test machine: `up` stops whatever dockerd
# serves /var/run/docker.sock.
set -euo pipefail
log() { printf '\033[1m[newer-engine]\033[0m %s\n' "$*" >&2; }
export DOCKER_API_VERSION=1.41   # the host's 20.10 client, which Engine 26 still serves
DOCKER=/usr/bin/docker
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${NEWER_ENGINE_SUITE:-trixie}
DIR=${SWARMLAB_NEWER_ENGINE_DIR:-/var/cache/swarmlab/docker-$SUITE}
DATA=/var/lib/docker-newer

# A fetch that failed once said nothing in a CI run and worked by hand minutes later: tried
# three times, each failure said with its exit code.
fetch() {
  [ -x "$DIR/usr/sbin/dockerd" ] && return 0
  local attempt rc
  for attempt in 1 2 3; do
    rc=0
    # In the background, not `( … ) || …`: there `set -e` would be off inside.
    fetch_once & wait $! || rc=$?
    [ "$rc" = 0 ] && return 0
    log "fetch attempt $attempt of 3 failed (exit $rc)"
    [ "$attempt" = 3 ] || sleep 10
  done
  exit "$rc"
}

fetch_once() {
  log "fetching $SUITE's docker.io into $DIR"
  local tmp; tmp=$(mktemp -d)
  curl -fsS "$MIRROR/dists/$SUITE/main/binary-amd64/Packages.xz" -o "$tmp/Packages.xz"
  # The docker.io stanza: where its .deb is and what its checksum must be.
  local stanza file sum
  stanza=$(xz -dc "$tmp/Packages.xz" | awk '/^Package: docker.io$/{p=1} /^$/{p=0} p')   # reads to the end: no SIGPIPE under pipefail
  file=$(awk '/^Filename:/{print $2}' <<<"$stanza")
  sum=$(awk '/^SHA256:/{print $2}' <<<"$stanza")
  [ -n "$file" ] && [ -n "$sum" ] || { log "no docker.io in $SUITE's index at $MIRROR"; exit 1; }
  curl -fsS "$MIRROR/$file" -o "$tmp/docker.deb"
  echo "$sum  $tmp/docker.deb" | sha256sum -c --quiet - || { log "checksum mismatch for $file"; exit 1; }
  mkdir -p "$DIR"
  dpkg-deb -x "$tmp/docker.deb" "$DIR"
  rm -rf "$tmp"
}

# The daemon of /var/run/docker.sock only (scripts/multinode.sh's nodes are dockerds too).
stop_dockerd() {
  local pid; pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "dockerd ($pid) did not stop within 30 s"; exit 1
}

wait_dockerd() {
  for _ in $(seq 1 150); do $DOCKER info >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "dockerd did not start: see $1"; tail -5 "$1" >&2; exit 1
}

up() {
  fetch
  $DOCKER image inspect labbox:latest >/dev/null 2>&1 && $DOCKER save labbox:latest -o /tmp/labbox-newer.tar
  stop_dockerd
  mkdir -p "$DATA"
  # Its own docker-init (tini) and docker-proxy come first on PATH; containerd and runc are the host's.
  PATH="$DIR/usr/sbin:$DIR/usr/bin:$PATH" DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nohup "$DIR/usr/sbin/dockerd" \
    --data-root "$DATA" --exec-root /var/run/docker-newer >/var/log/swarmlab-dockerd-newer.log 2>&1 &
  wait_dockerd /var/log/swarmlab-dockerd-newer.log
  [ "$($DOCKER info --format '{{.Swarm.LocalNodeState}}')" = active ] || $DOCKER swarm init --advertise-addr 127.0.0.1 >/dev/null
  if ! $DOCKER image inspect labbox:latest >/dev/null 2>&1 && [ -f /tmp/labbox-newer.tar ]; then
    $DOCKER load -q -i /tmp/labbox-newer.tar >/dev/null
  fi
  rm -f /tmp/labbox-newer.tar
  log "up: docker $($DOCKER version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') swarm=active (log: /var/log/swarmlab-dockerd-newer.log)"
}

down() {
  stop_dockerd
  bash "$(dirname "$0")/setup.sh"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  fetch) fetch ;;
  *) echo "usage: $0 up | down | fetch" >&2; exit 2 ;;
esac
