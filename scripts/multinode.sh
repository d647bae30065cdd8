#!/usr/bin/env bash
# A real multi-node Docker Swarm on one machine, for tests:
#   scripts/multinode.sh up [N]   # N nodes (default 3): n1 manager, the rest workers
#   scripts/multinode.sh down     # removes everything it made
#   scripts/multinode.sh stop-node I | start-node I   # a node's daemon goes away and comes back
# Each node is a dockerd in its own network namespace (own data-root, exec-root, socket,
# pidfile; own UTS namespace so node.hostname differs), joined by veths to a bridge that lives
# in a "hub" namespace, which leaves the host's firewall alone. Images reach the nodes by
# `docker save | docker load` (no registry can be reached here; a registry service would need
# an image of its own and adds a moving part for no gain on one machine).
# Node i: socket /run/slmn/n$i/docker.sock, address 10.77.0.$((10+i)); its /run is
# /run/slmn/n$i/run (own mount namespace).
set -euo pipefail
ROOT=/run/slmn
DATA=/var/lib/slmn
HUB=slmn-hub
HOST_DOCKER=/usr/bin/docker
export DOCKER_API_VERSION=1.41
log() { printf '[multinode] %s\n' "$*" >&2; }
d() { local i=$1; shift; $HOST_DOCKER -H "unix://$ROOT/n$i/docker.sock" "$@"; }
# The nodes run the host daemon's Engine (the binary of /var/run/docker.pid's process), so the
# harness follows scripts/newer-engine.sh; `dockerd` from PATH when the host runs none.
DOCKERD=$(readlink "/proc/$(cat /var/run/docker.pid 2>/dev/null || echo none)/exe" 2>/dev/null || echo dockerd)

start_node() {
  local i=$1 ns=slmn-n$1
  mkdir -p "$ROOT/n$i/run" "$DATA/n$i/exec"
  ln -sfn run/docker.sock "$ROOT/n$i/docker.sock"
  # dockerd cannot start under `ip netns exec` (it remounts /sys); enter only the netns. Its own
  # mount namespace gets its own /run, so a container that mounts /var/run/docker.sock (the
  # agent of charts/) talks to its own node, as on a real machine.
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net=/run/netns/$ns unshare --uts --mount --propagation private sh -c \
    "hostname $ns; mount --bind $ROOT/n$i/run /run; exec $DOCKERD --data-root $DATA/n$i --exec-root $DATA/n$i/exec \
     --pidfile /run/docker.pid -H unix:///run/docker.sock --bridge none" >>"$ROOT/n$i/dockerd.log" 2>&1 &
}

wait_node() {
  local i=$1
  for _ in $(seq 1 150); do d "$i" info >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "node n$i did not start: $ROOT/n$i/dockerd.log"; tail -5 "$ROOT/n$i/dockerd.log" >&2; return 1
}

stop_node() {
  local i=$1 pid; pid=$(cat "$ROOT/n$i/run/docker.pid")
  kill "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

up() {
  local n=${1:-3}
  down >/dev/null 2>&1 || true
  mkdir -p "$ROOT" "$DATA"
  ip netns add $HUB
  ip netns exec $HUB ip link add br0 type bridge
  ip netns exec $HUB ip link set br0 up
  ip netns exec $HUB ip link set lo up
  for i in $(seq 1 "$n"); do
    local ns=slmn-n$i
    ip netns add $ns
    ip link add "slmn$i-h" type veth peer name "slmn$i-n"
    ip link set "slmn$i-h" netns $HUB
    ip link set "slmn$i-n" netns $ns
    ip netns exec $HUB ip link set "slmn$i-h" master br0 up
    ip netns exec $ns ip link set "slmn$i-n" name eth0
    ip netns exec $ns ip addr add "10.77.0.$((10+i))/24" dev eth0
    ip netns exec $ns ip link set eth0 up
    ip netns exec $ns ip link set lo up
    start_node "$i"
  done
  for i in $(seq 1 "$n"); do wait_node "$i"; done
  d 1 swarm init --advertise-addr 10.77.0.11 >/dev/null
  local token; token=$(d 1 swarm join-token -q worker)
  for i in $(seq 2 "$n"); do
    d "$i" swarm join --advertise-addr "10.77.0.$((10+i))" --token "$token" 10.77.0.11:2377 >/dev/null
  done
  for _ in $(seq 1 100); do
    [ "$(d 1 node ls --format '{{.Status}}' | grep -c Ready)" = "$n" ] && break; sleep 0.1
  done
  for i in $(seq 1 "$n"); do $HOST_DOCKER save labbox:latest | d "$i" load >/dev/null; done
  log "up: $n nodes; manager socket unix://$ROOT/n1/docker.sock"
  d 1 node ls >&2
}

down() {
  for dir in "$ROOT"/n*; do
    [ -d "$dir" ] || continue
    local pid; pid=$(cat "$dir/run/docker.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for dir in "$ROOT"/n*; do
    local pid; pid=$(cat "$dir/run/docker.pid" 2>/dev/null || true)
    for _ in $(seq 1 100); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  # Shims and containerd of the nodes, then their mounts.
  pkill -9 -f "containerd.*($ROOT|$DATA)/" 2>/dev/null || true
  { grep -E " ($DATA|$ROOT)" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '/^slmn-/{print $1}'); do
    # A netns whose daemon left processes behind: end them before deleting it.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$ROOT" "$DATA"
  log "down"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  stop-node) stop_node "$2" ;;
  start-node) start_node "$2"; wait_node "$2" ;;
  *) echo "usage: $0 up [N] | down" >&2; exit 2 ;;
esac
